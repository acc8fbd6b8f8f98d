/**
 * The vdisk data path against its peers, measured in the same run on the same VHD:
 *   ours      flightdeck's NBD server + VHD engine (startNbdServer over openDisk)
 *   qemu-nbd  `qemu-nbd -f vpc` serving the same file (the peer we aim at: >= 0.8 of it)
 *   vpc       QEMU's vpc driver opening the file directly (no NBD hop at all)
 * Workloads via `qemu-img bench` at queue depth 16: 4 KiB reads and writes scattered with a
 * 1 MiB + 4 KiB stride (qemu-img bench has no random mode; the stride defeats readahead and
 * touches a different VHD block each time), and 64 KiB sequential reads and writes.
 *
 * Usage: node dist/bench/vhd/datapath.js [--size-mib N] [--reps N] [--out FILE]
 * Prints a table with ratios and writes JSON (default .cache/bench/vhd-datapath.json). Each
 * workload runs `reps` times per target in rotating order; the best run counts (the test
 * machines are shared, so the best run is the one least disturbed by others).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run, waitFor } from '../../src/core/process.js';
import { openDisk } from '../../src/disk/open.js';
import { startNbdServer } from '../../src/disk/nbd/server.js';
import { createConnection } from 'node:net';

interface Workload {
  name: string;
  write: boolean;
  bufBytes: number;
  stepBytes: number;
  count: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    reps: { type: 'string', default: '5' },
    out: { type: 'string', default: '.cache/bench/vhd-datapath.json' },
  },
});
const sizeBytes = Number(values['size-mib']) * MiB;
const reps = Number(values.reps);

const workloads: Workload[] = [
  { name: '4k-scattered-read', write: false, bufBytes: 4 * KiB, stepBytes: MiB + 4 * KiB, count: 40000 },
  { name: '4k-scattered-write', write: true, bufBytes: 4 * KiB, stepBytes: MiB + 4 * KiB, count: 20000 },
  { name: '64k-seq-read', write: false, bufBytes: 64 * KiB, stepBytes: 64 * KiB, count: 8000 },
  { name: '64k-seq-write', write: true, bufBytes: 64 * KiB, stepBytes: 64 * KiB, count: 8000 },
];

type Target = 'ours' | 'qemu-nbd' | 'vpc';
const targets: Target[] = ['ours', 'qemu-nbd', 'vpc'];

async function bench(w: Workload, format: string, file: string): Promise<number> {
  // Sequential runs stop at the end of the disk: qemu-img bench fails a request that crosses it.
  const count = w.stepBytes === w.bufBytes ? Math.min(w.count, Math.floor(sizeBytes / w.bufBytes)) : w.count;
  const args = ['bench', '-q', '-f', format, '-d', '16', '-c', String(count), '-s', String(w.bufBytes)];
  args.push('-S', String(w.stepBytes), ...(w.write ? ['-w', '--pattern=90'] : []), file);
  const t0 = process.hrtime.bigint();
  const res = await run('qemu-img', args);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const m = /Run completed in ([\d.]+) seconds/.exec(res.stdout);
  return m ? Number(m[1]) : wall;
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

async function withTarget<T>(t: Target, vhd: string, dir: string, fn: (fmt: string, file: string) => Promise<T>) {
  const sock = join(dir, `${t}.sock`);
  const url = `nbd+unix:///?socket=${sock}`;
  if (t === 'vpc') return fn('vpc', vhd);
  if (t === 'ours') {
    const dev = await openDisk(vhd, { write: true });
    const server = await startNbdServer({ socketPath: sock, device: dev });
    try {
      return await fn('raw', url);
    } finally {
      await server.close();
      await dev.close();
    }
  }
  const child: ChildProcess = spawn('qemu-nbd', ['-f', 'vpc', '-k', sock, '-t', '-e', '4', vhd], { stdio: 'ignore' });
  try {
    await waitFor('qemu-nbd socket', async () => ((await canConnect(sock)) ? true : undefined), { timeoutMs: 10_000 });
    return await fn('raw', url);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await rm(sock, { force: true });
  }
}

const dir = await mkdtemp(join(tmpdir(), 'fd-bench-datapath-'));
try {
  const vhd = join(dir, 'disk.vhd');
  await run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', vhd, String(sizeBytes)]);
  // Fill it so reads hit allocated blocks and writes overwrite instead of allocating.
  await run('qemu-io', ['-f', 'vpc', '-c', `write -P 0x5a 0 ${sizeBytes}`, vhd]);

  const results: Record<
    string,
    Record<Target, { seconds: number[]; best: number; mibPerS: number; iops: number }>
  > = {};
  for (const w of workloads) {
    const per = {} as Record<Target, { seconds: number[]; best: number; mibPerS: number; iops: number }>;
    for (const t of targets) per[t] = { seconds: [], best: Infinity, mibPerS: 0, iops: 0 };
    for (let r = 0; r < reps; r++) {
      // Rotate who goes first: the machine is shared, and the page cache warms up as we go.
      for (const t of [...targets.slice(r % 3), ...targets.slice(0, r % 3)]) {
        const s = await withTarget(t, vhd, dir, (fmt, file) => bench(w, fmt, file));
        per[t].seconds.push(s);
      }
    }
    for (const t of targets) {
      const best = Math.min(...per[t].seconds);
      per[t].best = best;
      const count = w.stepBytes === w.bufBytes ? Math.min(w.count, Math.floor(sizeBytes / w.bufBytes)) : w.count;
      per[t].iops = Math.round(count / best);
      per[t].mibPerS = Math.round(((count * w.bufBytes) / MiB / best) * 10) / 10;
    }
    results[w.name] = per;
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    process.stdout.write(
      `${w.name.padEnd(20)} ours ${String(per.ours.iops).padStart(7)} IOPS ${String(per.ours.mibPerS).padStart(7)} MiB/s | ` +
        `qemu-nbd ${String(per['qemu-nbd'].iops).padStart(7)} IOPS | vpc ${String(per.vpc.iops).padStart(7)} IOPS | ` +
        `ours/qemu-nbd ${ratio(per.ours.iops, per['qemu-nbd'].iops)}  ours/vpc ${ratio(per.ours.iops, per.vpc.iops)}\n`,
    );
  }
  const out = resolve(values.out!);
  await mkdir(dirname(out), { recursive: true });
  const summary = Object.fromEntries(
    Object.entries(results).map(([k, v]) => [
      k,
      { oursVsQemuNbd: v.ours.iops / v['qemu-nbd'].iops, oursVsVpc: v.ours.iops / v.vpc.iops },
    ]),
  );
  await writeFile(
    out,
    JSON.stringify(
      {
        bench: 'vhd-datapath',
        date: new Date().toISOString(),
        sizeBytes,
        queueDepth: 16,
        reps,
        workloads,
        results,
        summary,
      },
      null,
      2,
    ) + '\n',
  );
  process.stdout.write(`results: ${out}\n`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
