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
 *   env: BENCH_ROUNDS=3 BENCH_MEMORY_MIB=512 BENCH_DIRTY_MB=256 BENCH_CAP_S=60
 *        BENCH_CASES=plain-idle,ours-idle,plain-dirty,ours-dirty BENCH_OUT=path
 *        BENCH_OURS='{"downtimeLimit":"100ms"}' (options of our migrate; default: our defaults)
 *   Reported per case: the median over the rounds.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/core/process.js';
import { buildTinyImage, withProbes } from '../../src/host/images/tiny.js';
import { OursCluster } from './ours.js';
import { plainCase } from './plain.js';
import type { CaseResult } from './result.js';

const MEMORY_MIB = Number(process.env['BENCH_MEMORY_MIB'] ?? 512);
const DIRTY_MB = Number(process.env['BENCH_DIRTY_MB'] ?? 256);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
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

const median = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null).sort((p, q) => p - q);
  return v.length ? v[Math.floor(v.length / 2)]! : null;
};

/** Medians over the rounds of one case; converged only when every round converged. */
function summarize(rs: CaseResult[]): CaseResult & { rounds: number; convergedRounds: number } {
  const m = (f: (c: CaseResult) => number | null): number | null => median(rs.map(f));
  return {
    label: rs[0]!.label,
    rounds: rs.length,
    convergedRounds: rs.filter((c) => c.converged).length,
    converged: rs.every((c) => c.converged),
    wallMs: m((c) => c.wallMs)!,
    runningOnTargetMs: m((c) => c.runningOnTargetMs),
    reportedTotalMs: m((c) => c.reportedTotalMs),
    qemuDowntimeMs: m((c) => c.qemuDowntimeMs),
    ramBytes: m((c) => c.ramBytes),
    observedDowntimeMs: m((c) => c.observedDowntimeMs)!,
    baselineGapMs: m((c) => c.baselineGapMs)!,
    gapSeq: rs[0]!.gapSeq,
    dirtyRateMiBps: m((c) => c.dirtyRateMiBps)!,
  };
}

async function main(): Promise<void> {
  const img = withProbes(await buildTinyImage());
  const root = await mkdtemp(join(tmpdir(), 'fd-bench-mig-'));
  const rounds: Record<string, CaseResult[]> = {};
  let ours: OursCluster | undefined;
  try {
    const raw = join(root, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img.disk, raw]);
    const guest = { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline };
    const dirtyGuest = { ...guest, cmdline: `${img.cmdline} ${DIRTY_ARG}` };
    if (CASES.some((c) => c.startsWith('ours-'))) ours = await OursCluster.start(DIRTY_ARG);
    const o = ours;
    // Interleaved, so a change in the shared machine's load hits both sides alike.
    const cases: [string, (round: number) => Promise<CaseResult>][] = [
      ['plain-idle', () => plainCase(root, 'plain-idle', guest, raw, MEMORY_MIB, CAP_MS)],
      ['ours-idle', (r) => o!.migrateCase('ours-idle', `idle${r}`, 'tiny', MEMORY_MIB, CAP_MS)],
      ['plain-dirty', () => plainCase(root, 'plain-dirty', dirtyGuest, raw, MEMORY_MIB, CAP_MS)],
      ['ours-dirty', (r) => o!.migrateCase('ours-dirty', `dirty${r}`, 'tiny-dirty', MEMORY_MIB, CAP_MS)],
    ];
    for (let r = 0; r < ROUNDS; r++) {
      for (const [label, fn] of cases) {
        if (!CASES.includes(label)) continue;
        process.stderr.write(`round ${r} ${label}...\n`);
        const res = await fn(r);
        (rounds[label] ??= []).push(res);
        console.log(`round ${r} ${line(res)}`);
      }
    }
  } finally {
    await ours?.dispose();
    await rm(root, { recursive: true, force: true });
  }
  const results = Object.fromEntries(Object.entries(rounds).map(([k, rs]) => [k, summarize(rs)]));
  for (const c of Object.values(results)) console.log(`median ${line(c)} [${c.convergedRounds}/${c.rounds} converged]`);

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
        rounds: ROUNDS,
        cases: results,
        samples: rounds,
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
