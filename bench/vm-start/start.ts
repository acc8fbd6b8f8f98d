/**
 * Benchmark: time from "start" to the tiny guest's first heartbeat on its serial console,
 * VmRunner vs plain `qemu-system-x86_64` with the same kernel, initrd, command line, memory and
 * disk content, in the same run (interleaved rounds, medians). Ours is measured twice: on the
 * VHD data path (differencing child over the base, served by our vdisk process over NBD) and on
 * a raw copy like plain QEMU's, which isolates the runner's own overhead. Then the time for a
 * fresh runner to reattach to 5 running VMs, against the floor of a bare QMP handshake plus
 * query-status on the same 5 sockets.
 *
 *   npm run build && node dist/bench/vm-start/start.js     (BENCH_ROUNDS=4, BENCH_OUT=path)
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, sleep } from '../../src/core/process.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { buildTinyImage, tinyImagePaths, TINY_CMDLINE, withProbes } from '../../src/host/images/tiny.js';
import { VmRunner } from '../../src/host/runner.js';
import { buildQemuArgv } from '../../src/qemu/argv.js';
import { writeBootImage } from '../../src/qemu/boot-sector.js';
import { vmRunPaths } from '../../src/qemu/run-paths.js';
import { parseVmSpec } from '../../src/qemu/spec.js';
import { QmpClient } from '../../src/qemu/qmp.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 4);
const MEMORY_MIB = 160;
const HB = /FD-HB \d+ \d+ #/;

async function firstHeartbeat(serialLog: string, t0: bigint, timeoutMs = 180_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(serialLog, 'latin1').catch(() => '');
    if (HB.test(text)) return Number(process.hrtime.bigint() - t0) / 1e6;
    await sleep(5);
  }
  throw new Error(`no heartbeat in ${serialLog}`);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const cached = tinyImagePaths();
  const img = withProbes(existsSync(cached.manifest) ? { ...cached, cmdline: TINY_CMDLINE } : await buildTinyImage());
  const root = await mkdtemp(join(tmpdir(), 'fd-bench-vm-'));
  const runDir = join(root, 'run');
  const dataDir = join(root, 'data');
  const raw = join(root, 'base.raw');
  await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img.disk, raw]);
  const runner = new VmRunner({ runDir, dataDir, accel: 'tcg' });
  const samples = { oursVhd: [] as number[], oursRaw: [] as number[], ourArgv: [] as number[], plain: [] as number[] };
  try {
    const contenders: Array<[keyof typeof samples, (round: number) => Promise<number>]> = [
      [
        'oursVhd',
        async (round) => {
          const child = join(root, `child-${round}.vhd`);
          await createDifferencingVhd(child, img.disk);
          return timeOurs(runner, `vhd${round}`, { kind: 'vhd', path: child }, img);
        },
      ],
      [
        'oursRaw',
        async (round) => {
          const copy = join(root, `ours-${round}.raw`);
          await run('cp', ['--sparse=always', raw, copy]);
          return timeOurs(runner, `raw${round}`, { kind: 'raw', path: copy }, img);
        },
      ],
      [
        // our argv (sandbox, runas, socket serial...) spawned directly: separates argv from runner cost
        'ourArgv',
        async (round) => {
          const copy = join(root, `argv-${round}.raw`);
          await run('cp', ['--sparse=always', raw, copy]);
          return timeOurArgv(root, round, copy, img);
        },
      ],
      [
        'plain',
        async (round) => {
          const copy = join(root, `plain-${round}.raw`);
          await run('cp', ['--sparse=always', raw, copy]);
          return timePlain(root, round, copy, img);
        },
      ],
    ];
    for (let round = 0; round < ROUNDS; round++) {
      // rotate the order each round so no contender always runs first (or right after a copy)
      for (let k = 0; k < contenders.length; k++) {
        const [key, fn] = contenders[(round + k) % contenders.length]!;
        samples[key].push(await fn(round));
      }
      process.stderr.write(
        `round ${round}: ours(vhd) ${samples.oursVhd.at(-1)!.toFixed(0)} ms, ours(raw) ${samples.oursRaw.at(-1)!.toFixed(0)} ms, our argv ${samples.ourArgv.at(-1)!.toFixed(0)} ms, plain ${samples.plain.at(-1)!.toFixed(0)} ms\n`,
      );
    }
    const reattach = await benchReattach(root);
    const result = {
      bench: 'vm-start',
      accel: 'tcg',
      rounds: ROUNDS,
      memoryMiB: MEMORY_MIB,
      startToHeartbeatMs: {
        oursVhd: median(samples.oursVhd),
        oursRaw: median(samples.oursRaw),
        ourArgvDirect: median(samples.ourArgv),
        plainQemu: median(samples.plain),
        samples,
      },
      ratioOursVhdToPlain: median(samples.oursVhd) / median(samples.plain),
      ratioOursRawToPlain: median(samples.oursRaw) / median(samples.plain),
      ratioOurArgvToPlain: median(samples.ourArgv) / median(samples.plain),
      reattach5Ms: reattach,
      at: new Date().toISOString(),
    };
    console.log(
      `start -> first heartbeat (median of ${ROUNDS}): ours/VHD ${result.startToHeartbeatMs.oursVhd.toFixed(0)} ms, ` +
        `ours/raw ${result.startToHeartbeatMs.oursRaw.toFixed(0)} ms, our argv direct ${result.startToHeartbeatMs.ourArgvDirect.toFixed(0)} ms, plain qemu ${result.startToHeartbeatMs.plainQemu.toFixed(0)} ms`,
    );
    console.log(
      `ratio to plain: ours VHD path ${result.ratioOursVhdToPlain.toFixed(3)}, ours raw ${result.ratioOursRawToPlain.toFixed(3)}, our argv direct ${result.ratioOurArgvToPlain.toFixed(3)}`,
    );
    console.log(
      `reattach 5 running VMs: ${reattach.runner.toFixed(1)} ms (bare QMP handshake+query-status floor ${reattach.bareQmp.toFixed(1)} ms, ratio ${(reattach.runner / reattach.bareQmp).toFixed(2)})`,
    );
    const out =
      process.env['BENCH_OUT'] ??
      join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'vm-start.json');
    await mkdir(dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
    console.log(`results: ${out}`);
  } finally {
    await runner.close();
    await rm(root, { recursive: true, force: true });
  }
}

type Img = { kernel: string; initrd: string; cmdline: string };

async function timeOurs(
  runner: VmRunner,
  name: string,
  source: { kind: 'vhd' | 'raw'; path: string },
  img: Img,
): Promise<number> {
  const t0 = process.hrtime.bigint();
  await runner.start({
    name,
    uuid: randomUUID(),
    memoryBytes: MEMORY_MIB << 20,
    boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline } },
    disks: [{ id: 'root', source }],
    nics: [{ id: 'n0', mac: '52:54:00:fd:b0:01', network: { kind: 'user' } }],
  });
  const ms = await firstHeartbeat(runner.paths(name).serialLog, t0);
  await runner.stop(name);
  await runner.remove(name);
  return ms;
}

async function timePlain(root: string, round: number, disk: string, img: Img): Promise<number> {
  const serial = join(root, `plain-${round}.serial`);
  const t0 = process.hrtime.bigint();
  const q = spawn(
    'qemu-system-x86_64',
    [
      '-nodefaults',
      '-no-user-config',
      '-machine',
      'q35',
      '-accel',
      'tcg,thread=multi',
      '-m',
      `${MEMORY_MIB}M`,
      '-display',
      'none',
      '-kernel',
      img.kernel,
      '-initrd',
      img.initrd,
      '-append',
      img.cmdline,
      '-chardev',
      `file,id=s0,path=${serial}`,
      '-device',
      'isa-serial,chardev=s0',
      '-blockdev',
      JSON.stringify({ driver: 'raw', 'node-name': 'root', file: { driver: 'file', filename: disk } }),
      '-device',
      'virtio-blk-pci,drive=root',
      '-netdev',
      'user,id=n0',
      '-device',
      'virtio-net-pci,netdev=n0,mac=52:54:00:fd:b0:02,romfile=',
    ],
    { stdio: 'ignore' },
  );
  const exited = new Promise((r) => q.once('exit', r));
  try {
    return await firstHeartbeat(serial, t0);
  } finally {
    q.kill('SIGKILL');
    await exited;
  }
}

async function timeOurArgv(root: string, round: number, disk: string, img: Img): Promise<number> {
  const dir = join(root, `argv-${round}`);
  await mkdir(dir, { recursive: true });
  const spec = parseVmSpec({
    name: `argv${round}`,
    uuid: randomUUID(),
    memoryBytes: MEMORY_MIB << 20,
    boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline } },
    disks: [{ id: 'root', source: { kind: 'raw', path: disk } }],
    nics: [{ id: 'n0', mac: '52:54:00:fd:b0:03', network: { kind: 'user' } }],
  });
  const paths = vmRunPaths(dir);
  const t0 = process.hrtime.bigint();
  const q = spawn('qemu-system-x86_64', buildQemuArgv(spec, { paths, accel: 'tcg', runAs: 'nobody' }), {
    stdio: 'ignore',
  });
  const exited = new Promise((r) => q.once('exit', r));
  try {
    return await firstHeartbeat(paths.serialLog, t0);
  } finally {
    q.kill('SIGKILL');
    await exited;
  }
}

/** Five running VMs (boot-sector guests: reattach cost does not depend on the guest). */
async function benchReattach(root: string): Promise<{ runner: number; bareQmp: number }> {
  const runDir = join(root, 'run5');
  const dataDir = join(root, 'data5');
  const boot = await writeBootImage(join(root, 'hb.raw'), 'heartbeat');
  const first = new VmRunner({ runDir, dataDir, accel: 'tcg' });
  const names = [0, 1, 2, 3, 4].map((i) => `r${i}`);
  for (const n of names)
    await first.start({
      name: n,
      uuid: randomUUID(),
      memoryBytes: 32 << 20,
      disks: [{ id: 'boot', source: { kind: 'raw', path: boot }, readOnly: true }],
    });
  await first.close();
  const runnerMs: number[] = [];
  const bareMs: number[] = [];
  let last: VmRunner | undefined;
  try {
    for (let i = 0; i < 5; i++) {
      // the peer: the least any reattach must do, a QMP handshake and query-status per VM
      let t0 = process.hrtime.bigint();
      for (const n of names) {
        const q = await QmpClient.connect(join(runDir, n, 'qmp.sock'));
        await q.execute('query-status');
        await q.close();
      }
      bareMs.push(Number(process.hrtime.bigint() - t0) / 1e6);

      const r = new VmRunner({ runDir, dataDir, accel: 'tcg' });
      t0 = process.hrtime.bigint();
      const res = await r.reattachAll();
      await Promise.all(names.map((n) => r.status(n)));
      runnerMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (res.filter((x) => x.outcome === 'attached').length !== 5) throw new Error(`reattach: ${JSON.stringify(res)}`);
      await r.close();
      last = r;
    }
    last = new VmRunner({ runDir, dataDir, accel: 'tcg' });
    await last.reattachAll();
    for (const n of names) await last.stop(n);
  } finally {
    await last?.close();
  }
  return { runner: median(runnerMs), bareQmp: median(bareMs) };
}

await main();
