/**
 * Benchmark: live migration of a 512 MiB tiny guest, idle and dirtying memory fast, ours
 * (`flightdeck vm migrate` between two daemons on loopback sharing one etcd) against plain QEMU
 * (two qemu-system-x86_64 on loopback, QMP `migrate` with QEMU's defaults), in the same run, TCG.
 *
 * Per case: the downtime the guest's users observe (largest gap between heartbeat lines as they
 * arrive on the host's serial sockets, source then target), QEMU's reported downtime, the total
 * time, whether it converged within the cap. The echo round trip is not measured here: with user
 * networking each QEMU has its own hostfwd port and no client connection can follow the VM, and
 * our daemons' user networks have no hostfwd (the lab, with a real network, is where that belongs).
 *
 *   npm run build && node dist/bench/migration/run.js
 *   env: BENCH_MEMORY_MIB=512 BENCH_DIRTY_MB=256 BENCH_CAP_S=60 BENCH_OUT=path
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/core/process.js';
import { buildTinyImage } from '../../src/host/images/tiny.js';
import { OursCluster } from './ours.js';
import { plainCase } from './plain.js';
import type { CaseResult } from './result.js';

const MEMORY_MIB = Number(process.env['BENCH_MEMORY_MIB'] ?? 512);
const DIRTY_MB = Number(process.env['BENCH_DIRTY_MB'] ?? 256);
const CAP_MS = Number(process.env['BENCH_CAP_S'] ?? 60) * 1000;
const DIRTY_ARG = `fd.dirty_mb=${DIRTY_MB}`;
/** Comma-separated subset of plain-idle,plain-dirty,ours-idle,ours-dirty (default: all four). */
const CASES = (process.env['BENCH_CASES'] ?? 'plain-idle,plain-dirty,ours-idle,ours-dirty').split(',');

const fmt = (ms: number | null): string => (ms === null ? '-' : `${ms.toFixed(0)} ms`);
const ratio = (a: number | null, b: number | null): number | null => (a !== null && b ? a / b : null);

function line(c: CaseResult): string {
  return (
    `${c.label.padEnd(12)} ${c.converged ? 'converged     ' : 'DID NOT CONVERGE'} ` +
    `observed downtime ${fmt(c.observedDowntimeMs)} (noise floor ${fmt(c.baselineGapMs)}), ` +
    `QEMU downtime ${fmt(c.qemuDowntimeMs)}, running on target after ${fmt(c.runningOnTargetMs)}, ` +
    `total ${fmt(c.wallMs)} (reported ${fmt(c.reportedTotalMs)}), ` +
    `RAM sent ${c.ramBytes === null ? '-' : `${(c.ramBytes / 2 ** 20).toFixed(0)} MiB`}, ` +
    `dirty rate ${c.dirtyRateMiBps.toFixed(0)} MiB/s`
  );
}

async function main(): Promise<void> {
  const img = await buildTinyImage();
  const root = await mkdtemp(join(tmpdir(), 'fd-bench-mig-'));
  const results: Record<string, CaseResult> = {};
  let ours: OursCluster | undefined;
  try {
    const raw = join(root, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img.disk, raw]);
    const guest = { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline };
    const dirtyGuest = { ...guest, cmdline: `${img.cmdline} ${DIRTY_ARG}` };

    for (const [label, g] of [
      ['plain-idle', guest],
      ['plain-dirty', dirtyGuest],
    ] as const) {
      if (!CASES.includes(label)) continue;
      process.stderr.write(`${label}...\n`);
      results[label] = await plainCase(root, label, g, raw, MEMORY_MIB, CAP_MS);
      console.log(line(results[label]!));
    }
    if (CASES.some((c) => c.startsWith('ours-'))) ours = await OursCluster.start(DIRTY_ARG);
    for (const [label, image] of [
      ['ours-idle', 'tiny'],
      ['ours-dirty', 'tiny-dirty'],
    ] as const) {
      if (!ours || !CASES.includes(label)) continue;
      process.stderr.write(`${label}...\n`);
      results[label] = await ours.migrateCase(label, image, MEMORY_MIB, CAP_MS);
      console.log(line(results[label]!));
    }
  } finally {
    await ours?.dispose();
    await rm(root, { recursive: true, force: true });
  }

  const ratios = Object.fromEntries(
    (['idle', 'dirty'] as const).flatMap((k) => {
      const o = results[`ours-${k}`];
      const p = results[`plain-${k}`];
      if (!o || !p) return [];
      return [
        [
          k,
          {
            observedDowntime: ratio(o.observedDowntimeMs, p.observedDowntimeMs),
            qemuDowntime: p.converged ? ratio(o.qemuDowntimeMs, p.qemuDowntimeMs) : null,
            runningOnTarget: p.converged ? ratio(o.runningOnTargetMs, p.runningOnTargetMs) : null,
            totalTime: p.converged ? ratio(o.wallMs, p.wallMs) : null,
            note: p.converged ? undefined : `plain QEMU did not converge within ${CAP_MS / 1000} s`,
          },
        ],
      ];
    }),
  );
  for (const [k, r] of Object.entries(ratios)) {
    const f = (x: number | null): string => (x === null ? 'n/a' : x.toFixed(2));
    console.log(
      `ratio ours/plain (${k}): observed downtime ${f(r.observedDowntime)}, QEMU downtime ${f(r.qemuDowntime)}, running on target ${f(r.runningOnTarget)}, total time ${f(r.totalTime)}${r.note ? ` (${r.note})` : ''}`,
    );
  }
  const out =
    process.env['BENCH_OUT'] ??
    join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'migration.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(
    out,
    JSON.stringify(
      {
        bench: 'migration',
        accel: 'tcg',
        network: 'loopback (not the lab)',
        memoryMiB: MEMORY_MIB,
        dirtier: DIRTY_ARG,
        capS: CAP_MS / 1000,
        plainQemu: 'QMP migrate with QEMU defaults (128 MiB/s cap); disk on shared storage (the same raw file)',
        ours: 'flightdeck vm migrate, defaults; local VHD disks mirrored to the target (no shared storage)',
        echo: 'not measured: no client connection can follow a user-networking VM between two QEMUs on loopback',
        loadavg: (await import('node:os')).loadavg(),
        cases: results,
        ratiosOursToPlain: ratios,
        at: new Date().toISOString(),
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`results: ${out}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
