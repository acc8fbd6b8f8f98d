/**
 * The README's first command on a Debian 12 that has no Node.js at all: a fresh Debian 12 root
 * made with debootstrap (minbase; the downloaded packages are kept as a tarball, so later runs
 * only unpack), the checkout's scripts copied in, and `setup.sh --node-only` run in it under
 * chroot: apt brings curl and the certificates, then Node.js 24 and npm come from the npm
 * registry with curl, checked against their pinned integrity, under /opt/flightdeck/node. A
 * tarball that does not match is refused and nothing is installed.
 *
 * Skipped where this cannot be done: not root, no debootstrap (Debian's package), or the
 * Debian mirror out of reach. (The rest of setup, Debian's packages and the build, needs no
 * Node.js of the machine: it runs on the one installed here.)
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';
import { REPO_ROOT } from '../helpers/daemon.js';

const MIRROR = process.env['FLIGHTDECK_DEBIAN_MIRROR'] ?? 'http://deb.debian.org/debian';
const CACHE = join(process.env['FLIGHTDECK_IMAGE_CACHE'] || '/var/cache/flightdeck/images', 'debootstrap');
const TARBALL = join(CACHE, 'bookworm-minbase.tgz');

let root = '';
const mounted: string[] = [];
after(async () => {
  for (const m of mounted.reverse()) await run('umount', ['-l', m], { allowFail: true });
  if (root) await rm(root, { recursive: true, force: true });
});

async function whyNot(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (chroot)';
  if ((await run('sh', ['-c', 'command -v debootstrap'], { allowFail: true })).code !== 0)
    return 'debootstrap is not installed (apt-get install debootstrap)';
  return undefined;
}

const inRoot = (cmd: string, env: Record<string, string> = {}) =>
  run(
    'chroot',
    [
      root,
      '/usr/bin/env',
      '-i',
      'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
      'HOME=/root',
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      'sh',
      '-c',
      cmd,
    ],
    { allowFail: true },
  );

test('setup on a fresh Debian 12 without Node.js installs Node.js 24 from the registry, verified', async (t) => {
  const skip = await whyNot();
  if (skip) return t.skip(skip);
  root = await mkdtemp('/var/tmp/fd-debootstrap-');
  if (!existsSync(TARBALL)) {
    await mkdir(CACHE, { recursive: true });
    const work = await mkdtemp('/var/tmp/fd-debootstrap-dl-');
    const tmp = `${TARBALL}.${process.pid}`;
    const made = await run('debootstrap', ['--variant=minbase', `--make-tarball=${tmp}`, 'bookworm', work, MIRROR], {
      allowFail: true,
    });
    await rm(work, { recursive: true, force: true });
    if (made.code !== 0) return t.skip(`debootstrap could not fetch Debian 12: ${made.stderr.slice(-500)}`);
    await run('mv', [tmp, TARBALL]);
  }
  const made = await run(
    'debootstrap',
    ['--variant=minbase', `--unpack-tarball=${TARBALL}`, 'bookworm', root, MIRROR],
    {
      allowFail: true,
    },
  );
  assert.equal(made.code, 0, `debootstrap: ${made.stdout.slice(-1000)}${made.stderr.slice(-1000)}`);
  await mkdir(join(root, 'proc'), { recursive: true });
  await run('mount', ['-t', 'proc', 'proc', join(root, 'proc')]);
  mounted.push(join(root, 'proc'));
  await copyFile('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
  await writeFile(join(root, 'etc/apt/sources.list'), `deb ${MIRROR} bookworm main\n`);
  // The certificate authorities this machine's network needs (a local TLS proxy, say) are the
  // machine's, not the OS's: a Debian installed on this network would be given them too.
  if (existsSync('/usr/local/share/ca-certificates'))
    await cp('/usr/local/share/ca-certificates', join(root, 'usr/local/share/ca-certificates'), { recursive: true });

  const before = await inRoot('if command -v node || command -v nodejs; then echo has-node; else echo no-node; fi');
  assert.equal(before.stdout.trim(), 'no-node', 'the new root has no Node.js');
  assert.match(await readFile(join(root, 'etc/debian_version'), 'utf8'), /^12\./);

  const src = '/opt/fd-src';
  await mkdir(join(root, src), { recursive: true });
  await cp(join(REPO_ROOT, 'scripts'), join(root, src, 'scripts'), { recursive: true });

  // a tarball that does not match its pinned integrity is refused, and nothing is installed
  const bad = (await readFile(join(root, src, 'scripts/node.sh'), 'utf8')).replace(
    /^FD_NODE_INTEGRITY=sha512-.*$/m,
    `FD_NODE_INTEGRITY=sha512-${Buffer.alloc(64, 1).toString('base64')}`,
  );
  await writeFile(join(root, src, 'scripts/node.sh'), bad);
  const refused = await inRoot(`bash ${src}/scripts/setup.sh --node-only`, { FLIGHTDECK_NODE_HOME: '/opt/fd-bad' });
  assert.notEqual(refused.code, 0, 'a mismatching tarball fails setup');
  assert.match(refused.stderr, /does not match its integrity/);
  assert.equal(existsSync(join(root, 'opt/fd-bad/node')), false, 'nothing installed');

  await cp(join(REPO_ROOT, 'scripts/node.sh'), join(root, src, 'scripts/node.sh'));
  const setup = await inRoot(`bash ${src}/scripts/setup.sh --node-only`);
  assert.equal(setup.code, 0, `setup --node-only: ${setup.stdout.slice(-2000)}${setup.stderr.slice(-2000)}`);
  const version = await inRoot('/opt/flightdeck/node/bin/node -p process.versions.node');
  assert.match(version.stdout.trim(), /^24\./, 'Node.js 24 LTS');
  const npm = await inRoot('PATH=/opt/flightdeck/node/bin:$PATH npm --version');
  assert.equal(npm.code, 0, npm.stderr);
  assert.match(npm.stdout.trim(), /^\d+\.\d+\.\d+$/);
  // a second run finds it and downloads nothing
  const again = await inRoot(`bash ${src}/scripts/setup.sh --node-only`);
  assert.equal(again.code, 0);
  assert.doesNotMatch(again.stdout, /installing Node\.js/);
});
