/**
 * Benchmark: raw 1 GiB (half data, half zeros) -> dynamic VHD, our converter vs
 * `qemu-img convert -O vpc`, measured in the same run. Prints the ratio and writes JSON to
 * bench/results/vhd-convert.json (or the path in BENCH_OUT). Both outputs are checked equal to
 * the source with `qemu-img compare` so a fast wrong answer cannot win. Both timings include
 * making the output durable (our fsync; `sync FILE` after qemu-img), from a cold page cache.
 *
 *   npm run build && node dist/bench/vhd/convert.js [SIZE]   (SIZE default 1G)
 */
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomFillSync } from 'node:crypto';
import { run } from '../../src/core/process.js';
import { parseSize, MiB } from '../../src/core/units.js';
import { convertDisk } from '../../src/disk/convert.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);

async function makeSource(path: string, sizeBytes: number): Promise<void> {
  // Alternating 8 MiB data / 8 MiB zeros: half data, half zeros, spread over the whole disk.
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    const chunk = Buffer.alloc(8 * MiB);
    for (let off = 0; off < sizeBytes; off += 16 * MiB) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function dropCaches(): Promise<void> {
  // Best effort: both sides then start from the same (cold) page cache state.
  await run('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  await dropCaches();
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const sizeBytes = parseSize(process.argv[2] ?? '1G');
  const dir = await mkdtemp(join(tmpdir(), 'fd-bench-vhd-'));
  try {
    const src = join(dir, 'src.raw');
    await makeSource(src, sizeBytes);
    const ours: number[] = [];
    const qemu: number[] = [];
    let oursSize = 0;
    let qemuSize = 0;
    for (let r = 0; r < ROUNDS; r++) {
      const a = join(dir, `ours-${r}.vhd`);
      const b = join(dir, `qemu-${r}.vhd`);
      // Alternate who goes first so neither always gets the warmer machine.
      const runOurs = async (): Promise<void> => {
        ours.push(await timeIt(async () => void (await convertDisk(src, a, { to: 'vhd' }))));
      };
      const runQemu = async (): Promise<void> => {
        qemu.push(
          await timeIt(async () => {
            await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', src, b]);
            // Ours fsyncs before it renames the result into place; qemu-img leaves it in the page
            // cache. Make both durable so the comparison is like for like.
            await run('sync', [b]);
          }),
        );
      };
      if (r % 2 === 0) {
        await runOurs();
        await runQemu();
      } else {
        await runQemu();
        await runOurs();
      }
      await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', src, a]);
      await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', src, b]);
      oursSize = (await stat(a)).size;
      qemuSize = (await stat(b)).size;
      await rm(a);
      await rm(b);
    }
    const result = {
      bench: 'vhd-convert',
      description: 'raw (half data, half zeros) -> dynamic VHD',
      sizeBytes,
      rounds: ROUNDS,
      oursS: median(ours),
      qemuImgS: median(qemu),
      oursRuns: ours,
      qemuImgRuns: qemu,
      /** >1 means we are faster: qemu-img time / our time (medians). */
      speedupVsQemuImg: median(qemu) / median(ours),
      /** The same from the best run of each: less sensitive to other load on a shared machine. */
      speedupVsQemuImgBest: Math.min(...qemu) / Math.min(...ours),
      oursFileBytes: oursSize,
      qemuImgFileBytes: qemuSize,
      date: new Date().toISOString(),
    };
    const out =
      process.env['BENCH_OUT'] ??
      join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'vhd-convert.json');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(
      `raw ${sizeBytes} B -> dynamic VHD: ours ${result.oursS.toFixed(2)} s, qemu-img ${result.qemuImgS.toFixed(2)} s, ` +
        `ratio (qemu-img/ours) ${result.speedupVsQemuImg.toFixed(2)}x median, ` +
        `${result.speedupVsQemuImgBest.toFixed(2)}x best-of-${ROUNDS}; results in ${out}\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
