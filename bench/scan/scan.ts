/**
 * Benchmark: agentless scan and integrity verify of a VM disk holding a 4 GiB ext4 filesystem
 * (about 3 GiB of files of mixed sizes, one EICAR among them), measured in the same run against
 * the plain tools on the same files:
 *  - scan: ours (`scanDisk` over the dynamic VHD: vdisk -> qemu-storage-daemon -> FUSE -> loop)
 *    vs `clamscan -r` over the same filesystem loop-mounted directly from a raw copy;
 *  - verify after 1 % of the files changed (written into the differencing child taken at
 *    baseline time): ours reading only what changed vs our full re-hash, and vs `sha256sum`
 *    over every file of the direct mount.
 * Both scans must find the EICAR file and both verifies the same changed files, so a fast
 * wrong answer cannot win. Caches are dropped before each timing. Writes JSON to
 * bench/results/scan.json (or BENCH_OUT) with the load average.
 *
 *   npm run build && node dist/bench/scan/scan.js [FS_SIZE]   (default 4G; as root)
 */
import { randomBytes, randomFillSync } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/core/process.js';
import { parseSize, MiB } from '../../src/core/units.js';
import { convertDisk } from '../../src/disk/convert.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { mountImage, unmountImage } from '../../src/host/mount.js';
import { writtenRanges } from '../../src/host/scan/changed.js';
import { takeBaseline, verifyBaseline } from '../../src/host/scan/integrity.js';
import { scanDisk, withMountedDisk } from '../../src/host/scan/scan.js';
import { EICAR, eicarDatabase } from '../../test/scan/fixture.js';

const cliCommand = [process.execPath, fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))];

async function dropCaches(): Promise<void> {
  await run('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ s: number; value: T }> {
  await dropCaches();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { s: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

/** Files of 4 KiB..2 MiB (random content) filling `fillBytes`, 100 to a directory. */
async function fill(root: string, fillBytes: number): Promise<string[]> {
  const files: string[] = [];
  const buf = Buffer.alloc(2 * MiB);
  let used = 0;
  for (let i = 0; used < fillBytes; i++) {
    const size = 4096 + Math.floor(Math.random() * (2 * MiB - 4096));
    const rel = `/data/d${Math.floor(i / 100)}/f${i}.bin`;
    await mkdir(dirname(root + rel), { recursive: true });
    randomFillSync(buf, 0, size);
    await writeFile(root + rel, buf.subarray(0, size));
    files.push(rel);
    used += size;
  }
  await writeFile(root + '/data/eicar.com', EICAR);
  return files;
}

async function main(): Promise<void> {
  const fsBytes = parseSize(process.argv[2] ?? '4G');
  const dir = await mkdtemp(join(tmpdir(), 'fd-bench-scan-'));
  const stateDir = join(dir, 'state');
  const mnt = join(dir, 'mnt');
  await mkdir(mnt);
  try {
    const db = await eicarDatabase(join(dir, 'db'));
    const raw = join(dir, 'fs.raw');
    const fh = await open(raw, 'w');
    await fh.truncate(fsBytes);
    await fh.close();
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', raw]);
    await run('mount', [raw, mnt]);
    const files = await fill(mnt, Math.floor(fsBytes * 0.75));
    await run('umount', [mnt]);
    const vhd = join(dir, 'disk.vhd');
    await convertDisk(raw, vhd, { to: 'vhd' });
    console.log(
      `filesystem ${fsBytes / MiB} MiB, ${files.length} files; load ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
    );

    const peerScan = await timed(async () => {
      await run('mount', ['-o', 'ro', raw, mnt]);
      try {
        return (
          await run('clamscan', ['-r', `--database=${db}`, '--infected', '--no-summary', mnt], { allowFail: true })
        ).stdout;
      } finally {
        await run('umount', [mnt]);
      }
    });
    const ours = await timed(() =>
      scanDisk({ source: { kind: 'image', path: vhd }, databaseDir: db, cliCommand, stateDir }),
    );
    if (!peerScan.value.includes('eicar.com') || ours.value.infected.length !== 1)
      throw new Error(
        `scans disagree: clamscan ${peerScan.value.trim()} / ours ${JSON.stringify(ours.value.infected)}`,
      );

    const view = { cliCommand, stateDir };
    const base = await withMountedDisk({ ...view, source: { kind: 'image', path: vhd } }, (d) =>
      takeBaseline(d, { dirs: ['/'] }),
    );
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, vhd);
    const changedFiles = files.filter((_, i) => i % 100 === 0);
    await mountImage({ image: child, dir: mnt, cliCommand, stateDir: join(dir, 'mounts') });
    try {
      for (const f of changedFiles) {
        const w = await open(mnt + f, 'r+');
        await w.write(randomBytes(4096), 0, 4096, 0);
        await w.close();
      }
    } finally {
      await unmountImage(mnt, { stateDir: join(dir, 'mounts') });
    }
    const fast = await timed(async () => {
      const changed = await writtenRanges(child);
      return withMountedDisk({ ...view, source: { kind: 'image', path: child } }, (d) =>
        verifyBaseline(d, base, { changed }),
      );
    });
    const full = await timed(() =>
      withMountedDisk({ ...view, source: { kind: 'image', path: child } }, (d) => verifyBaseline(d, base)),
    );
    const want = changedFiles.map((f) => f).sort();
    for (const [name, r] of [
      ['fast', fast.value],
      ['full', full.value],
    ] as const) {
      const got = r.changed.map((c) => c.path).sort();
      if (JSON.stringify(got) !== JSON.stringify(want))
        throw new Error(`${name} verify found ${got.length} changed, want ${want.length}`);
    }
    // the changed disk as a plain file (qemu-img's vpc driver cannot read differencing VHDs)
    await rm(raw);
    await convertDisk(child, raw, { to: 'raw' });
    const sha = await timed(async () => {
      await run('mount', ['-o', 'ro', raw, mnt]);
      try {
        await run('sh', ['-c', `find ${mnt} -type f -print0 | xargs -0 sha256sum > /dev/null`]);
      } finally {
        await run('umount', [mnt]);
      }
    });
    const dataBytes = base.bytes;
    const result = {
      bench: 'scan',
      fsBytes,
      files: files.length + 1,
      dataBytes,
      scan: {
        oursS: ours.s,
        clamscanDirectS: peerScan.s,
        oursMBps: dataBytes / MiB / ours.s,
        clamscanDirectMBps: dataBytes / MiB / peerScan.s,
        ratioOursVsDirect: peerScan.s / ours.s,
      },
      verify: {
        changedFiles: changedFiles.length,
        changedBlocksS: fast.s,
        fullRehashS: full.s,
        sha256sumDirectS: sha.s,
        hashedFast: fast.value.hashed,
        hashedFull: full.value.hashed,
        speedupVsFullRehash: full.s / fast.s,
        speedupVsSha256sum: sha.s / fast.s,
      },
      loadavg: loadavg(),
      date: new Date().toISOString(),
    };
    console.log(JSON.stringify(result, null, 2));
    const out = process.env['BENCH_OUT'] ?? fileURLToPath(new URL('../../../bench/results/scan.json', import.meta.url));
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
  } finally {
    await run('umount', [mnt], { allowFail: true });
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
