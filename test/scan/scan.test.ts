/**
 * Agentless scans of disks with real filesystems: EICAR found at the right path on ext4, NTFS,
 * FAT, XFS and an LVM logical volume (GPT) and on an MBR disk; a damaged partition and one of
 * random bytes get their own errors while the rest is scanned; the disk is unchanged; nothing
 * is left behind, also after a scan killed midway and cleaned at the next start.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../../src/core/process.js';
import { identify } from '../../src/host/pidfile.js';
import { scanDisk } from '../../src/host/scan/scan.js';
import { cleanupViews, isMounted, type ViewState } from '../../src/host/scan/view.js';
import { eicarDatabase, makeGptDisk, makeMbrDisk, sha256File, type GptFixture } from './fixture.js';

const cliCommand = [process.execPath, fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))];
let work: string;
let stateDir: string;
let db: string;
let gpt: GptFixture;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fd-scan-'));
  stateDir = join(work, 'state');
  db = await eicarDatabase(join(work, 'db'));
  gpt = await makeGptDisk(work);
});
after(async () => {
  await cleanupViews(stateDir).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

async function leftovers(): Promise<string[]> {
  const out: string[] = [];
  const loops = await readdir('/sys/block').catch(() => [] as string[]);
  for (const l of loops.filter((x) => x.startsWith('loop'))) {
    const b = await readFile(`/sys/block/${l}/loop/backing_file`, 'utf8').catch(() => '');
    if (b.startsWith(stateDir)) out.push(`loop ${l} on ${b.trim()}`);
  }
  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const l of mounts.split('\n')) if (l.includes(stateDir)) out.push(`mount ${l.split(' ')[4]}`);
  const dirs = await readdir(stateDir).catch(() => [] as string[]);
  out.push(...dirs.map((d) => `state dir ${d}`));
  return out;
}

test('EICAR is found on ext4, NTFS, FAT, XFS and LVM; bad partitions get their own errors', async () => {
  const before = await sha256File(gpt.image);
  const progress: number[] = [];
  const r = await scanDisk({
    source: { kind: 'image', path: gpt.image },
    databaseDir: db,
    cliCommand,
    stateDir,
    onProgress: (p) => progress.push(p.done),
  });
  const found = r.infected.map((i) => `${i.volume}:${i.path}`).sort();
  assert.deepEqual(found, [...gpt.infected].sort(), 'infected files at their guest paths');
  assert.ok(
    r.infected.every((i) => i.signature === 'FD.Test.EICAR.UNOFFICIAL' || i.signature.startsWith('FD.Test.EICAR')),
  );
  const vol = (n: string) => r.volumes.find((v) => v.name === n)!;
  for (const n of ['p1', 'p2', 'p3', 'p7', gpt.lvName])
    assert.equal(vol(n).status, 'scanned', `${n}: ${JSON.stringify(vol(n))}`);
  assert.deepEqual(
    [vol('p1').fsType, vol('p2').fsType, vol('p3').fsType, vol('p7').fsType],
    ['ext', 'ntfs', 'fat', 'xfs'],
  );
  assert.equal(vol('p5').error?.code, 'FD_SCAN_MOUNT_FAILED', `damaged ext4: ${JSON.stringify(vol('p5'))}`);
  assert.equal(vol('p6').error?.code, 'FD_SCAN_UNKNOWN_FS', `random bytes: ${JSON.stringify(vol('p6'))}`);
  assert.ok(r.files >= 10, `files counted: ${r.files}`);
  assert.equal(progress.at(-1), r.files, 'progress ends at the file count');
  assert.equal(await sha256File(gpt.image), before, 'the disk is unchanged');
  assert.deepEqual(await leftovers(), [], 'nothing left behind');
});

test('an MBR disk: FAT and ext4 partitions', async () => {
  const mbr = await makeMbrDisk(work);
  const r = await scanDisk({ source: { kind: 'image', path: mbr.image }, databaseDir: db, cliCommand, stateDir });
  assert.deepEqual(r.infected.map((i) => `${i.volume}:${i.path}`).sort(), mbr.infected.sort());
});

test('a database directory without signatures is refused before anything is opened', async () => {
  await assert.rejects(
    scanDisk({ source: { kind: 'image', path: gpt.image }, databaseDir: join(work, 'state'), cliCommand, stateDir }),
    { code: 'FD_SCAN_NO_DATABASE' },
  );
  assert.deepEqual(await leftovers(), []);
});

test('a scan killed midway leaves nothing once the next start cleans up', async () => {
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL('./scan-child.js', import.meta.url)), gpt.image, db, stateDir, ...cliCommand],
    { stdio: 'ignore' },
  );
  const view = await waitFor(
    'a scan with mounted volumes',
    async () => {
      for (const d of await readdir(stateDir).catch(() => [] as string[])) {
        const v = JSON.parse(
          await readFile(join(stateDir, d, 'state.json'), 'utf8').catch(() => '{}'),
        ) as Partial<ViewState>;
        if ((v.mounts?.length ?? 0) >= 2 && v.qsd) return v as ViewState;
      }
      return undefined;
    },
    { timeoutMs: 120_000, intervalMs: 50 },
  );
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.ok((await leftovers()).length > 0, 'the killed scan left its pieces');
  assert.equal(await cleanupViews(stateDir), 1, 'the leftover view was found');
  assert.deepEqual(await leftovers(), [], 'no mount, loop device or state left');
  assert.equal(identify(view.qsd!.pid)?.startTicks === view.qsd!.startTicks, false, 'qemu-storage-daemon is gone');
  if (view.vdisk) assert.equal(identify(view.vdisk.pid)?.startTicks === view.vdisk.startTicks, false, 'vdisk is gone');
  for (const m of view.mounts) assert.equal(await isMounted(m), false);
});
