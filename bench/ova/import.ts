/**
 * Benchmark: import of an OVA holding a 1 GiB streamOptimized VMDK (half data, half zeros)
 * into a dynamic VHD. Ours streams the disk straight out of the tar through our VMDK reader
 * into our VHD engine (one pass, no extraction); the peer is what a script would do:
 * `tar x` then `qemu-img convert -f vmdk -O vpc -o subformat=dynamic`, measured in the same
 * run (ours also verifies the SHA256 manifest; a second peer adds `sha256sum` to match). Both results are checked equal with `qemu-img compare` so a fast wrong answer cannot
 * win, and both include making the output durable. Prints the ratio and writes JSON to
 * bench/results/ova-import.json (or BENCH_OUT).
 *
 *   npm run build && node dist/bench/ova/import.js [SIZE]   (SIZE default 1G; BENCH_ROUNDS=5)
 */
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { randomFillSync } from 'node:crypto';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/core/process.js';
import { MiB, parseSize } from '../../src/core/units.js';
import { streamVmdkToVhd } from '../../src/disk/vmdk/to-vhd.js';
import type { OvfVirtualSystem } from '../../src/ovf/model.js';
import { writeOva } from '../../src/ovf/ova-writer.js';
import { readPackage } from '../../src/ovf/package.js';
import { writeOvf } from '../../src/ovf/writer.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);

/** 8 MiB data / 8 MiB zeros alternating; each data run half random, half repetitive text. */
async function makeSource(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    const chunk = Buffer.alloc(8 * MiB);
    chunk.fill('flightdeck appliance data ', 4 * MiB);
    for (let off = 0; off < sizeBytes; off += 16 * MiB) {
      randomFillSync(chunk, 0, 4 * MiB);
      await fh.write(chunk, 0, Math.min(chunk.length, sizeBytes - off), off);
    }
  } finally {
    await fh.close();
  }
}

async function makeOva(dir: string, raw: string, sizeBytes: number): Promise<string> {
  // The disk is made by qemu-img, the way other tools' OVAs carry a foreign VMDK.
  const vmdk = join(dir, 'bench-disk1.vmdk');
  await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, vmdk]);
  const vs: OvfVirtualSystem = {
    kind: 'VirtualSystem',
    id: 'bench',
    name: 'bench',
    vcpus: 1,
    memoryBytes: 256 * MiB,
    controllers: [{ instanceId: 'c', kind: 'scsi' }],
    disks: [{ instanceId: 'd', diskId: 'disk1', controllerId: 'c', addressOnParent: '0' }],
    nics: [],
    drives: [],
    devices: [],
    products: [],
    eulas: [],
    extensions: [],
  };
  const { size } = await stat(vmdk);
  const descriptor = writeOvf({
    files: [{ id: 'file1', href: 'bench-disk1.vmdk', sizeBytes: size }],
    disks: [{ diskId: 'disk1', capacityBytes: sizeBytes, fileRef: 'file1', formatKind: 'vmdk-streamOptimized' }],
    networks: [],
    configurations: [],
    entity: vs,
  });
  const ova = join(dir, 'bench.ova');
  await writeOva(ova, { descriptorName: 'bench.ovf', descriptor, files: [{ name: 'bench-disk1.vmdk', path: vmdk }] });
  await rm(vmdk);
  return ova;
}

async function dropCaches(): Promise<void> {
  await run('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  await dropCaches();
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const sizeBytes = parseSize(process.argv[2] ?? '1G');
  const dir = await mkdtemp(join(tmpdir(), 'fd-bench-ova-'));
  try {
    const raw = join(dir, 'src.raw');
    await makeSource(raw, sizeBytes);
    const ova = await makeOva(dir, raw, sizeBytes);
    const ovaBytes = (await stat(ova)).size;
    const ours: number[] = [];
    const peer: number[] = [];
    const careful: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const oursVhd = join(dir, 'ours.vhd');
      const peerDir = join(dir, 'peer');
      const peerVhd = join(dir, 'peer.vhd');
      await rm(oursVhd, { force: true });
      await rm(peerDir, { recursive: true, force: true });
      await rm(peerVhd, { force: true });
      await mkdir(peerDir);
      const runOurs = async (): Promise<void> => {
        ours.push(
          await timeIt(async () => {
            await readPackage(ova, {
              onFile: async (f) => void (await streamVmdkToVhd(f.body, oursVhd, { source: f.file.href })),
            });
          }),
        );
      };
      const runPeer = async (): Promise<void> => {
        peer.push(
          await timeIt(async () => {
            await run('tar', ['-C', peerDir, '-xf', ova]);
            await run('qemu-img', [
              'convert',
              '-f',
              'vmdk',
              '-O',
              'vpc',
              '-o',
              'subformat=dynamic',
              join(peerDir, 'bench-disk1.vmdk'),
              peerVhd,
            ]);
            await run('sync', [peerVhd]);
          }),
        );
      };
      // A careful script also checks the manifest before converting: the same work ours does.
      const runCareful = async (): Promise<void> => {
        await rm(peerDir, { recursive: true, force: true });
        await mkdir(peerDir);
        await rm(peerVhd, { force: true });
        careful.push(
          await timeIt(async () => {
            await run('tar', ['-C', peerDir, '-xf', ova]);
            await run('sha256sum', [join(peerDir, 'bench-disk1.vmdk'), join(peerDir, 'bench.ovf')]);
            await run('qemu-img', [
              'convert',
              '-f',
              'vmdk',
              '-O',
              'vpc',
              '-o',
              'subformat=dynamic',
              join(peerDir, 'bench-disk1.vmdk'),
              peerVhd,
            ]);
            await run('sync', [peerVhd]);
          }),
        );
      };
      // Alternate who goes first, so neither always inherits the other's write-back.
      if (round % 2 === 0) {
        await runOurs();
        await runPeer();
      } else {
        await runPeer();
        await runOurs();
      }
      if (round === 0) {
        // Same disk contents from both, and both equal to the source.
        for (const [fmt, file] of [
          ['vpc', oursVhd],
          ['vpc', peerVhd],
        ] as const) {
          const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', fmt, raw, file], { allowFail: true });
          if (cmp.code !== 0) throw new Error(`${file} differs from the source: ${cmp.stdout}`);
        }
      }
      await runCareful();
      process.stderr.write(
        `round ${round + 1}: ours ${ours.at(-1)!.toFixed(2)}s, tar x + qemu-img ${peer.at(-1)!.toFixed(2)}s, ` +
          `with sha256sum ${careful.at(-1)!.toFixed(2)}s\n`,
      );
    }
    const result = {
      bench: 'ova-import',
      sizeBytes,
      ovaBytes,
      rounds: ROUNDS,
      oursS: median(ours),
      peerS: median(peer),
      peer: 'tar x + qemu-img convert -f vmdk -O vpc -o subformat=dynamic + sync',
      ratio: median(peer) / median(ours),
      oursAllS: ours,
      peerAllS: peer,
      peerWithManifestCheckS: median(careful),
      ratioWithManifestCheck: median(careful) / median(ours),
      peerWithManifestCheckAllS: careful,
      qemuImg: (await run('qemu-img', ['--version'])).stdout.split('\n')[0],
      // The build machines are shared: the load says how much to trust the absolute times.
      loadAverage: loadavg(),
      cpus: availableParallelism(),
      date: new Date().toISOString(),
    };
    console.log(
      `OVA import ${(sizeBytes / MiB).toFixed(0)} MiB disk (${(ovaBytes / MiB).toFixed(0)} MiB OVA): ` +
        `ours ${result.oursS.toFixed(2)}s, tar x + qemu-img ${result.peerS.toFixed(2)}s, ` +
        `ratio ${result.ratio.toFixed(2)}x (>1 means ours is faster); against tar x + sha256sum + qemu-img ` +
        `${result.peerWithManifestCheckS.toFixed(2)}s, ratio ${result.ratioWithManifestCheck.toFixed(2)}x`,
    );
    const out =
      process.env['BENCH_OUT'] ??
      join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'ova-import.json');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
    console.log(`wrote ${out}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
