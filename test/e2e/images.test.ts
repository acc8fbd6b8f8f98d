/**
 * Images the way people install guests, through the real CLI and daemon: disk images imported
 * by path and by upload (converted to VHD, content identical per qemu-img), an installer ISO
 * that the VM boots from, and a cloud-init NoCloud seed whose contents the guest reads.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, mkdir, copyFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { run, waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';

interface Image {
  name: string;
  kind: string;
  format: string;
  path: string;
  kernel: string | null;
  initrd: string | null;
}
interface Task<R = unknown> {
  operation: string;
  state: string;
  result: R;
  error: { code: string } | null;
}

let d: TestDaemon;
let work: string;

before(async () => {
  d = await TestDaemon.start();
  work = await mkdtemp(join(tmpdir(), 'fd-img-'));
  const r = await d.cli(['image', 'build', 'tiny', '--probes']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await d?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

async function serial(name: string): Promise<string[]> {
  return (await d.json<{ serial: string[] }>(['vm', 'logs', name, '--lines', '2000'])).serial;
}

test('a qcow2 disk image imported by path and by upload becomes a VHD with the same content', async () => {
  // In the host's import directory: the daemon reads it by path there.
  const src = join(d.dataDir, 'import', 'src.qcow2');
  await mkdir(join(d.dataDir, 'import'), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', src, '24M']);
  await chmod(src, 0o600); // what a user drops in the data dir is theirs to keep private
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xc3 20M 64k', src]);
  const byPath = await d.json<Task<Image>>(['image', 'import', src, '--name', 'q-path']);
  assert.equal(byPath.state, 'succeeded', JSON.stringify(byPath.error));
  assert.equal(byPath.operation, 'image.import');
  const byUpload = await d.json<Task<Image>>(['image', 'import', src, '--name', 'q-upload', '--upload']);
  assert.equal(byUpload.state, 'succeeded', JSON.stringify(byUpload.error));
  for (const img of [byPath.result, byUpload.result]) {
    assert.equal(img.format, 'vhd');
    const cmp = await run('qemu-img', ['compare', '-f', 'vpc', '-F', 'qcow2', img.path, src], { allowFail: true });
    assert.equal(cmp.code, 0, `${img.name}: ${cmp.stdout}${cmp.stderr}`);
  }
  const again = await d.cli(['image', 'import', src, '--name', 'q-path']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /FD_IMAGE_EXISTS/);
  const missing = await d.cli(['image', 'import', join(work, 'nope.qcow2'), '--name', 'nope']);
  assert.match(missing.stderr, /FD_IMAGE_FILE_NOT_FOUND/);
});

test('a VM created with --iso boots from the installer ISO', async () => {
  const tiny = await d.json<Image>(['image', 'show', 'tiny']);
  const root = join(work, 'iso');
  await mkdir(join(root, 'isolinux'), { recursive: true });
  await copyFile('/usr/lib/ISOLINUX/isolinux.bin', join(root, 'isolinux', 'isolinux.bin'));
  await copyFile('/usr/lib/syslinux/modules/bios/ldlinux.c32', join(root, 'isolinux', 'ldlinux.c32'));
  await copyFile(tiny.kernel!, join(root, 'vmlinuz'));
  await copyFile(tiny.initrd!, join(root, 'initrd'));
  await writeFile(
    join(root, 'isolinux', 'isolinux.cfg'),
    'SERIAL 0 115200\nDEFAULT fd\nPROMPT 0\nTIMEOUT 1\nLABEL fd\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd console=ttyS0 root=/dev/vda fd.probes=1 fd.bootedfrom=iso\n',
  );
  const iso = join(work, 'boot.iso');
  await run('xorriso', [
    '-as',
    'mkisofs',
    '-quiet',
    '-o',
    iso,
    '-b',
    'isolinux/isolinux.bin',
    '-c',
    'isolinux/boot.cat',
    '-no-emul-boot',
    '-boot-load-size',
    '4',
    '-boot-info-table',
    root,
  ]);
  const imported = await d.json<Task<Image>>(['image', 'import', iso, '--name', 'installer']);
  assert.equal(imported.result.kind, 'iso');

  await d.json([
    'vm',
    'create',
    'inst',
    '--image',
    'tiny',
    '--iso',
    'installer',
    '--memory',
    '128M',
    '--start',
    'true',
  ]);
  // The kernel prints the command line isolinux gave it; then the guest comes up from its disk.
  await waitFor(
    'boot from the ISO, then the heartbeat',
    async () => {
      const lines = await serial('inst');
      return lines.some((l) => l.includes('fd.bootedfrom=iso')) &&
        lines.some((l) => parseProbeLine(l)?.kind === 'heartbeat')
        ? true
        : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
  const busy = await d.cli(['image', 'delete', 'installer']);
  assert.match(busy.stderr, /FD_IMAGE_BUSY/);
  await d.json(['vm', 'delete', 'inst', '--force', 'true']);
  await d.json(['image', 'delete', 'installer']);
});

test('--cloud-init builds a NoCloud seed ISO the guest reads', async () => {
  await d.json([
    'vm',
    'create',
    'seeded',
    '--image',
    'tiny',
    '--memory',
    '128M',
    '--cloud-init',
    'hostname=seedy,user=ann',
    '--start',
    'true',
  ]);
  const seed = await waitFor(
    'FD-SEED lines',
    async () => {
      const ev = (await serial('seeded')).map(parseProbeLine).filter((e) => e?.kind === 'seed');
      const has = (key: string): boolean => ev.some((e) => e?.kind === 'seed' && e.key === key);
      return has('hostname') && has('user-data') ? ev : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
  assert.ok(
    seed.some((e) => e?.kind === 'seed' && e.key === 'hostname' && e.value === 'seedy'),
    JSON.stringify(seed),
  );
  assert.ok(
    seed.some((e) => e?.kind === 'seed' && e.key === 'user-data' && e.value.includes('name: ann')),
    JSON.stringify(seed),
  );
  const bad = await d.cli(['vm', 'create', 'badseed', '--image', 'tiny', '--cloud-init', 'colour=red']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /FD_BAD_REQUEST/);
});

test('nothing under the data dir is readable by other users after the tour; a restart repairs what was opened', async () => {
  // The tour so far left images (imported, uploaded, built), a running VM with a seed ISO
  // (cloud-init), its serial log and sockets, etcd's data, the token and TLS-less config.
  const world = async (): Promise<string> =>
    (await run('find', [d.dataDir, '(', '-perm', '-o+r', '-o', '-perm', '-o+w', ')', '-print'])).stdout.trim();
  assert.equal(await world(), '', 'world-readable or -writable files');
  const mode = async (p: string): Promise<string> => ((await stat(p)).mode & 0o777).toString(8);
  const { id } = await d.json<{ id: string }>(['vm', 'show', 'seeded']);
  const vmDir = join(d.dataDir, 'pools', 'default', 'vms', id);
  const seedIso = (await readdir(vmDir)).find((n) => n.endsWith('.iso'));
  assert.ok(seedIso, `a seed ISO in ${vmDir}`);
  for (const f of [join(d.dataDir, 'token'), join(vmDir, seedIso), join(d.dataDir, 'run', id, 'serial.log')])
    assert.equal(await mode(f), '600', f);
  assert.equal(await mode(join(d.dataDir, 'run', id)), '700');

  // Opened up by hand (or by an older version): the next start takes it back.
  await chmod(d.dataDir, 0o755);
  await chmod(join(d.dataDir, 'token'), 0o644);
  await chmod(join(vmDir, seedIso), 0o666);
  assert.notEqual(await world(), '');
  await d.stop();
  await d.startProcess();
  assert.equal(await world(), '', 'after the restart');
  assert.equal(await mode(join(d.dataDir, 'token')), '600');
  assert.equal(await mode(d.dataDir), '711', 'search only, for QEMU on its way to its run dir');
  const vm = await d.json<{ state: string }>(['vm', 'show', 'seeded']);
  assert.equal(vm.state, 'running', 'the VM was taken over, not disturbed');
  await d.json(['vm', 'delete', 'seeded', '--force', 'true']);
});
