/**
 * Benchmark: `flightdeck ovf import` through a real daemon (the whole path a user runs: CLI,
 * API, task, descriptor checks, one pass over the OVA converting the 1 GiB streamOptimized VMDK
 * (half data, half zeros) into a dynamic VHD in the pool, manifest checked, records written)
 * against what a careful script does on the same host in the same run: `tar x`, `sha256sum`,
 * `qemu-img convert -O vpc -o subformat=dynamic`, `sync`. bench/ova/import.ts measures the
 * library alone; this one adds what the daemon costs on top. Both outputs are checked equal
 * to the source with `qemu-img compare`. Writes JSON to bench/results/ova-daemon-import.json
 * (or BENCH_OUT).
 *
 *   npm run build && node dist/bench/ova/daemon-import.js [SIZE]   (SIZE default 1G; BENCH_ROUNDS=3)
 */
import { mkdir, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { randomFillSync } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/core/process.js';
import { MiB, parseSize } from '../../src/core/units.js';
import type { OvfVirtualSystem } from '../../src/ovf/model.js';
import { writeOva } from '../../src/ovf/ova-writer.js';
import { writeOvf } from '../../src/ovf/writer.js';
import { TestDaemon } from '../../test/helpers/daemon.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);

interface Task {
  state: string;
  createdAt: string;
  finishedAt: string;
  error: unknown;
  result: { vms: { id: string; name: string }[] };
}

async function makeOva(dir: string, sizeBytes: number): Promise<{ ova: string; raw: string }> {
  const raw = join(dir, 'src.raw');
  const fh = await open(raw, 'w');
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
  const descriptor = writeOvf({
    files: [{ id: 'file1', href: 'bench-disk1.vmdk', sizeBytes: (await stat(vmdk)).size }],
    disks: [{ diskId: 'disk1', capacityBytes: sizeBytes, fileRef: 'file1', formatKind: 'vmdk-streamOptimized' }],
    networks: [],
    configurations: [],
    entity: vs,
  });
  const ova = join(dir, 'bench.ova');
  await writeOva(ova, { descriptorName: 'bench.ovf', descriptor, files: [{ name: 'bench-disk1.vmdk', path: vmdk }] });
  await rm(vmdk);
  return { ova, raw };
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  await run('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const sizeBytes = parseSize(process.argv[2] ?? '1G');
  const dir = await mkdtemp(join(tmpdir(), 'fd-bench-ovad-'));
  const d = await TestDaemon.start({ config: { importDirs: [dir] } });
  try {
    const { ova, raw } = await makeOva(dir, sizeBytes);
    const ours: number[] = [];
    const oursTask: number[] = [];
    const peer: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const name = `bench${round}`;
      let task: Task | undefined;
      const runOurs = async (): Promise<void> => {
        ours.push(
          await timeIt(async () => {
            task = await d.json<Task>(['ovf', 'import', ova, '--name', name]);
          }),
        );
        if (task!.state !== 'succeeded') throw new Error(`import failed: ${JSON.stringify(task!.error)}`);
        oursTask.push((Date.parse(task!.finishedAt) - Date.parse(task!.createdAt)) / 1000);
      };
      const peerDir = join(dir, 'peer');
      const peerVhd = join(dir, 'peer.vhd');
      await rm(peerDir, { recursive: true, force: true });
      await rm(peerVhd, { force: true });
      await mkdir(peerDir);
      const runPeer = async (): Promise<void> => {
        peer.push(
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
      if (round % 2 === 0) {
        await runOurs();
        await runPeer();
      } else {
        await runPeer();
        await runOurs();
      }
      if (round === 0) {
        const vols = await d.json<{ vmId: string; path: string }[]>(['volume', 'list']);
        const mine = vols.find((v) => v.vmId === task!.result.vms[0]!.id)!;
        for (const f of [mine.path, peerVhd]) {
          const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, f], { allowFail: true });
          if (cmp.code !== 0) throw new Error(`${f} differs from the source: ${cmp.stdout}`);
        }
      }
      await d.json(['vm', 'delete', name]);
      process.stderr.write(
        `round ${round + 1}: ovf import ${ours.at(-1)!.toFixed(2)}s (task ${oursTask.at(-1)!.toFixed(2)}s), ` +
          `tar x + sha256sum + qemu-img ${peer.at(-1)!.toFixed(2)}s\n`,
      );
    }
    const result = {
      bench: 'ova-daemon-import',
      sizeBytes,
      ovaBytes: (await stat(ova)).size,
      rounds: ROUNDS,
      oursS: median(ours),
      oursTaskS: median(oursTask),
      peerS: median(peer),
      peer: 'tar x + sha256sum + qemu-img convert -f vmdk -O vpc -o subformat=dynamic + sync',
      ratio: median(peer) / median(ours),
      oursAllS: ours,
      oursTaskAllS: oursTask,
      peerAllS: peer,
      qemuImg: (await run('qemu-img', ['--version'])).stdout.split('\n')[0],
      loadAvg: loadavg(),
      at: new Date().toISOString(),
    };
    const out =
      process.env['BENCH_OUT'] ??
      join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'ova-daemon-import.json');
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(
      `ovf import through the daemon of a ${sizeBytes}-byte OVA: ${result.oursS.toFixed(2)}s ` +
        `(task ${result.oursTaskS.toFixed(2)}s); tar x + sha256sum + qemu-img: ${result.peerS.toFixed(2)}s; ` +
        `ratio (peer/ours) ${result.ratio.toFixed(2)}x\n`,
    );
  } finally {
    await d.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
