/**
 * Scans and integrity checks of a real guest's disk (the tiny guest, ext4 on a VHD chain):
 * a running guest is scanned through a QEMU fleece (point-in-time view) and keeps running,
 * EICAR written from its shell is found at its path; a baseline of the stopped guest, one file
 * changed from the shell, and verify reports exactly that file, reading only what the
 * differencing child taken at baseline time holds.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../../src/core/process.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { buildTinyImage, tinyImagePaths, TINY_CMDLINE, withProbes } from '../../src/host/images/tiny.js';
import type { VmRunner } from '../../src/host/runner.js';
import { writtenRanges } from '../../src/host/scan/changed.js';
import { takeBaseline, verifyBaseline } from '../../src/host/scan/integrity.js';
import { scanDisk, withMountedDisk } from '../../src/host/scan/scan.js';
import { cleanupViews } from '../../src/host/scan/view.js';
import { listFleeces, startFleece, stopFleece } from '../../src/qemu/fleece.js';
import { guestShell } from '../helpers/guest-shell.js';
import { testHost, type TestHost } from '../vm/helpers.js';
import { EICAR, eicarDatabase, sha256File } from './fixture.js';

const cliCommand = [process.execPath, fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))];
let host: TestHost;
let runner: VmRunner;
let work: string;
let stateDir: string;
let db: string;
let img: { kernel: string; initrd: string; disk: string; cmdline: string };

/** The guest's last FD-HB sequence number in its serial log. */
async function heartbeat(name: string): Promise<number> {
  const text = await readFile(runner.paths(name).serialLog, 'latin1').catch(() => '');
  return Number([...text.matchAll(/FD-HB (\d+) \d+ #/g)].at(-1)?.[1] ?? -1);
}

async function boot(name: string, disk: string): Promise<void> {
  await runner.start({
    name,
    uuid: randomUUID(),
    memoryBytes: 160 << 20,
    boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: `${img.cmdline} fd.hb_ms=200` } },
    disks: [{ id: 'root', source: { kind: 'vhd', path: disk } }],
  });
}

before(async () => {
  host = await testHost();
  runner = await host.runner();
  work = await mkdtemp(join(tmpdir(), 'fd-scanvm-'));
  stateDir = join(work, 'state');
  db = await eicarDatabase(join(work, 'db'));
  const cached = tinyImagePaths();
  img = withProbes(existsSync(cached.manifest) ? { ...cached, cmdline: TINY_CMDLINE } : await buildTinyImage());
});
after(async () => {
  await cleanupViews(stateDir).catch(() => undefined);
  await host?.dispose();
  await rm(work, { recursive: true, force: true });
});

test('a running guest is scanned from a point-in-time view, keeps running, and its EICAR is found', async () => {
  const disk = join(host.root, 'scan-c0.vhd');
  await createDifferencingVhd(disk, img.disk);
  await boot('scanvm', disk);
  const shell = await guestShell(runner.paths('scanvm'));
  try {
    const b64 = Buffer.from(EICAR).toString('base64');
    assert.equal((await shell.run(`echo ${b64} | base64 -d > /root/eicar.com && sync`)).status, 0);
    const qmp = runner.qmp('scanvm');
    const hb = await heartbeat('scanvm');
    const qemuPid = Number((await readFile(runner.paths('scanvm').pidfile, 'utf8')).trim());
    const fleece = await startFleece(qmp, {
      diskNode: 'd-root',
      dir: runner.paths('scanvm').dir,
      id: 'test1',
      qemuPid,
    });
    let r;
    try {
      r = await scanDisk({
        source: { kind: 'nbd', socket: fleece.socket, export: fleece.exportName },
        databaseDir: db,
        cliCommand,
        stateDir,
      });
    } finally {
      await stopFleece(qmp, { dir: runner.paths('scanvm').dir, id: 'test1' });
    }
    assert.deepEqual(
      r.infected.map((i) => `${i.volume}:${i.path}`),
      ['disk:/root/eicar.com'],
    );
    assert.ok(r.files > 20, `the guest's files were scanned: ${r.files}`);
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'running', 'the guest was not left paused');
    await waitFor('heartbeat after the scan', async () => ((await heartbeat('scanvm')) > hb ? true : undefined), {
      timeoutMs: 30_000,
    });
    assert.deepEqual(await listFleeces(qmp), [], 'no fleece node left in QEMU');
    const jobs = await qmp.execute<unknown[]>('query-block-jobs');
    assert.deepEqual(jobs, [], 'no block job left');
  } finally {
    shell.close();
  }
});

test('baseline, one file changed in the guest, verify reports exactly that file', async () => {
  const c0 = join(host.root, 'scan-c0.vhd');
  await runner.stop('scanvm');
  const c0Hash = await sha256File(c0);
  const base = await withMountedDisk({ source: { kind: 'image', path: c0 }, cliCommand, stateDir }, (d) =>
    takeBaseline(d),
  );
  assert.equal(await sha256File(c0), c0Hash, 'the baseline did not write to the disk');
  assert.ok(
    base.entries.some((e) => e.path === '/etc/hostname'),
    'the system dirs were recorded',
  );
  assert.ok(base.entries.some((e) => e.path.startsWith('/bin/')));
  // from here on the guest writes into a child: what it holds is what changed
  const c1 = join(host.root, 'scan-c1.vhd');
  await createDifferencingVhd(c1, c0);
  await runner.remove('scanvm');
  await boot('scanvm', c1);
  const shell = await guestShell(runner.paths('scanvm'));
  try {
    assert.equal((await shell.run('echo tampered >> /etc/hostname && sync')).status, 0);
  } finally {
    shell.close();
  }
  await runner.stop('scanvm');
  const changed = await writtenRanges(c1);
  const fast = await withMountedDisk({ source: { kind: 'image', path: c1 }, cliCommand, stateDir }, (d) =>
    verifyBaseline(d, base, { changed }),
  );
  assert.deepEqual(fast.changed, [{ volume: 'disk', path: '/etc/hostname', what: ['size', 'content'] }]);
  assert.deepEqual(fast.added, []);
  assert.deepEqual(fast.removed, []);
  assert.ok(fast.hashed < fast.files / 4, `only what changed was read again: ${fast.hashed} of ${fast.files}`);
  const full = await withMountedDisk({ source: { kind: 'image', path: c1 }, cliCommand, stateDir }, (d) =>
    verifyBaseline(d, base),
  );
  assert.deepEqual(full.changed, fast.changed, 'a full re-hash finds the same');
  assert.equal(full.hashed, full.files);
  const text = await readFile(join(work, 'db', 'fd-test.hdb'), 'utf8');
  assert.match(text, /FD\.Test\.EICAR/);
});
