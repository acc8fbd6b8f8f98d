/**
 * Benchmark: unplanned failover of a mirrored VM in the lab (3 hosts, real network namespaces,
 * fence keepers, a 3-member etcd), and what the mirror costs the guest's writes.
 *
 * 1. For kill / partition / freeze of a protected tiny VM's primary (neither it nor the standby
 *    is the leader, so no election mixes in): the time from the failure to the guest's first
 *    heartbeat on the standby, split into detection (-> the leader logs `host lost`), fencing
 *    wait (-> `failing over`) and takeover + boot (-> first heartbeat), and the acknowledged
 *    writes lost (must be 0). Peer, in the same run on the same machine: a cold boot of the same
 *    guest as a plain qemu-system-x86_64 (bench/vm-start's plain contender); the ratio says how
 *    much detection and fencing add on top of booting.
 * 2. Average guest write latency (QEMU's block accounting through the daemon's /metrics) in
 *    10 s windows alternating unmirrored / mirrored (blockdev-mirror write-blocking to the
 *    standby over NBD/TCP; `vm protect`, then `vm unprotect`), BENCH_ROUNDS pairs and a last
 *    unmirrored window; medians per side.
 *
 *   npm run build && node dist/bench/failover/run.js
 *   env: BENCH_ROUNDS=2 (medians over rounds) BENCH_MODES=kill,partition,freeze BENCH_WINDOW_S=10
 *        BENCH_ETCD_LEADER=pin|primary|free (where the etcd raft leader is at the failure, see
 *        below) BENCH_OUT=path. Needs root (the lab). At most two guests run at once (CPU is shared).
 *   Per round it also reports when the old QEMU was gone, when the new primary began re-syncing,
 *   the QEMUs running at takeover and after the heal, and any host that did not fail whose fence
 *   keeper lost its lease (it kills that host's guarded VMs).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FAIL_MODES, Lab, type FailMode } from '../../src/lab/lab.js';
import { sleep, waitFor } from '../../src/core/process.js';
import { buildTinyImage, withProbes } from '../../src/host/images/tiny.js';
import { labCli, labJson } from '../../test/helpers/lab.js';
import { plainColdBootMs } from './plain-boot.js';
import { failoverRound, type RoundResult } from './round.js';
import { SerialTail } from './serial-tail.js';
import { writeWindow, type WriteWindow } from './write-latency.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 2);
const WINDOW_S = Number(process.env['BENCH_WINDOW_S'] ?? 10);
const MODES = (process.env['BENCH_MODES'] ?? FAIL_MODES.join(',')).split(',') as FailMode[];
const MEMORY_MIB = 128;
/**
 * Where the etcd raft leader is when the primary fails: `pin` (default) moves it to the
 * flightdeck leader's host first (the primary is an etcd follower), `primary` onto the failing
 * host (the worst case: an etcd election on top), `free` leaves it where it is.
 */
const ETCD_LEADER = (process.env['BENCH_ETCD_LEADER'] ?? 'pin') as 'pin' | 'primary' | 'free';
if (!['pin', 'primary', 'free'].includes(ETCD_LEADER)) throw new Error('BENCH_ETCD_LEADER is pin, primary or free');
const PREFIX = `fo${process.pid % 10000}`;

const median = (xs: (number | null)[]): number | null => {
  const v = xs.filter((x): x is number => x !== null).sort((p, q) => p - q);
  if (!v.length) return null;
  const h = Math.floor(v.length / 2);
  return v.length % 2 ? v[h]! : (v[h - 1]! + v[h]!) / 2;
};
const fmt = (ms: number | null): string => (ms === null ? '-' : `${ms.toFixed(0)} ms`);
const ratio = (a: number | null, b: number | null): number | null => (a !== null && b ? a / b : null);

interface Host {
  name: string;
  leader: boolean;
  state: string;
}

async function roles(lab: Lab): Promise<{ leader: string; primary: string; standby: string }> {
  const hosts = await waitFor(
    'a leader',
    async () => {
      const hs = await labJson<Host[]>(lab, 'h1', ['host', 'list']).catch(() => [] as Host[]);
      return hs.some((h) => h.leader) ? hs : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  const leader = hosts.find((h) => h.leader)!.name;
  const [primary, standby] = hosts.filter((h) => !h.leader).map((h) => h.name);
  return { leader, primary: primary!, standby: standby! };
}

/** Write latency of one VM on `primary`: unmirrored, mirrored to `standby`, unmirrored again. */
async function mirrorCost(lab: Lab, primary: string, standby: string): Promise<WriteWindow[]> {
  const name = 'folat';
  await labJson(lab, primary, [
    'vm',
    'create',
    name,
    '--image',
    'tiny',
    '--memory',
    `${MEMORY_MIB}M`,
    '--host',
    primary,
    '--start',
    'true',
  ]);
  const vm = await labJson<{ id: string }>(lab, primary, ['vm', 'show', name]);
  const tail = new SerialTail(`${lab.host(primary).dataDir}/run/${vm.id}/serial.log`, 50).start();
  const counted = (): number => tail.counters.length;
  try {
    await waitFor('the guest writing counters', () => (tail.counters.length > 20 ? true : undefined), {
      timeoutMs: 120_000,
      intervalMs: 100,
    });
    await sleep(5000); // past the boot's own writes
    // Alternating, so a change in the shared machine's load hits both sides alike.
    const out: WriteWindow[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      out.push(await writeWindow(lab, primary, name, 'unmirrored', WINDOW_S, counted));
      const task = await labJson<{ state: string; error: unknown }>(lab, primary, [
        'vm',
        'protect',
        name,
        '--standby',
        standby,
      ]);
      if (task.state !== 'succeeded') throw new Error(`vm protect: ${JSON.stringify(task.error)}`);
      await sleep(2000); // past the end of the initial sync
      out.push(await writeWindow(lab, primary, name, 'mirrored', WINDOW_S, counted));
      await labJson(lab, primary, ['vm', 'unprotect', name]);
      await sleep(2000);
    }
    out.push(await writeWindow(lab, primary, name, 'unmirrored', WINDOW_S, counted));
    return out;
  } finally {
    await tail.stop();
    await labJson(lab, primary, ['vm', 'delete', name, '--force', 'true']);
  }
}

function summarize(rs: RoundResult[]) {
  const m = (f: (r: RoundResult) => number | null): number | null => median(rs.filter((r) => r.failedOver).map(f));
  return {
    rounds: rs.length,
    failedOver: rs.filter((r) => r.failedOver).length,
    failureToHeartbeatMs: m((r) => r.failureToHeartbeatMs),
    detectionMs: m((r) => r.detectionMs),
    fencingWaitMs: m((r) => r.fencingWaitMs),
    takeoverBootMs: m((r) => r.takeoverBootMs),
    takeoverMs: m((r) => r.takeoverMs),
    bootMs: m((r) => r.bootMs),
    vmStartMs: m((r) => r.vmStartMs),
    guestBootMs: m((r) => r.guestBootMs),
    oldQemuGoneMs: m((r) => r.oldQemuGoneMs),
    /** Summed over the rounds, not a median: any lost write counts. */
    lostAcknowledgedWrites: rs.reduce((a, r) => a + (r.lostAcknowledgedWrites ?? 0), 0),
    roundsWithoutCounterCheck: rs.filter((r) => r.lostAcknowledgedWrites === null).length,
    roundsWithTwoQemusAfterHeal: rs.filter((r) => r.qemuHostsAfterHeal.length !== 1).length,
    etcdLeaderAtFailure: rs.map((r) => r.etcdLeaderAtFailure),
    roundsWithOtherHostsSelfFencing: rs.filter((r) => r.selfFencedElsewhere.length > 0).length,
  };
}

async function main(): Promise<void> {
  const img = withProbes(await buildTinyImage());
  const scratch = await mkdtemp(join(tmpdir(), 'fd-bench-fo-'));
  const rounds: RoundResult[] = [];
  const plainMs: number[] = [];
  let windows: WriteWindow[] = [];
  let lab: Lab | undefined;
  try {
    process.stderr.write(`lab up (${PREFIX})...\n`);
    lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
    const built = await labCli(lab, 'h1', ['image', 'build', 'tiny', '--probes']);
    if (built.code !== 0) throw new Error(`image build tiny: ${built.stdout}${built.stderr}`);

    const r0 = await roles(lab);
    process.stderr.write(`write latency on ${r0.primary} (standby ${r0.standby})...\n`);
    windows = await mirrorCost(lab, r0.primary, r0.standby);
    for (const w of windows)
      console.log(
        `write latency ${w.label.padEnd(27)} ${w.avgWriteLatencyMs === null ? '-' : w.avgWriteLatencyMs.toFixed(2)} ms avg over ${w.writeOps} writes in ${w.seconds.toFixed(1)} s (guest counters ${w.countersPerSecond.toFixed(1)}/s)`,
      );

    for (let r = 0; r < ROUNDS; r++) {
      // The peer first, while no lab guest runs: at most two guests at once on this machine.
      const p = await plainColdBootMs(scratch, { ...img }, MEMORY_MIB);
      plainMs.push(p);
      console.log(`round ${r} plain QEMU cold boot -> first heartbeat ${fmt(p)}`);
      for (const mode of MODES) {
        const who = await roles(lab);
        process.stderr.write(
          `round ${r} ${mode} of ${who.primary} (standby ${who.standby}, leader ${who.leader})...\n`,
        );
        const res = await failoverRound(lab, mode, r, who, { etcdLeader: ETCD_LEADER });
        rounds.push(res);
        console.log(
          `round ${r} ${mode.padEnd(9)} ${res.failedOver ? '' : 'NO FAILOVER '}failure -> heartbeat ${fmt(res.failureToHeartbeatMs)} ` +
            `(detection ${fmt(res.detectionMs)}, fencing wait ${fmt(res.fencingWaitMs)}, takeover+boot ${fmt(res.takeoverBootMs)}: ` +
            `takeover ${fmt(res.takeoverMs)}, boot ${fmt(res.bootMs)} = VM start ${fmt(res.vmStartMs)} + guest boot ${fmt(res.guestBootMs)}); old QEMU gone ${fmt(res.oldQemuGoneMs)}; re-sync from ${fmt(res.resyncStartMs)}; ` +
            `counter printed ${res.lastCounterPrintedOnOldPrimary ?? '-'} (at failure ${res.lastCounterPrintedAtFailure ?? '-'}, last one at ${fmt(res.lastCounterArrivedMs)}, heal at ${fmt(res.healAtMs)}), ` +
            `on standby's disk ${res.counterStartOnStandby ?? '-'}, lost ${res.lostAcknowledgedWrites ?? '?'}; ` +
            `QEMUs at takeover [${res.qemuHostsAtTakeover.join(',')}] after heal [${res.qemuHostsAfterHeal.join(',')}]; ` +
            `etcd leader ${res.etcdLeaderAtFailure ?? '?'}`,
        );
        if (res.selfFencedElsewhere.length)
          console.log(
            `  !!! fence keeper of a host that did not fail lost its lease: ${res.selfFencedElsewhere.join('; ')}`,
          );
        if (res.error) console.log(`  error: ${res.error}`);
        if ((res.lostAcknowledgedWrites ?? 0) > 0)
          console.log(`  !!! ${res.lostAcknowledgedWrites} ACKNOWLEDGED WRITES LOST in ${mode} round ${r} !!!`);
        if (!res.failedOver || (res.lostAcknowledgedWrites ?? 0) > 0 || res.qemuHostsAfterHeal.length !== 1)
          for (const l of res.logLines) console.log(`  log ${l}`);
      }
    }
  } finally {
    if (lab) await Lab.destroy(PREFIX).catch((err: unknown) => console.error(`lab down: ${String(err)}`));
    await rm(scratch, { recursive: true, force: true });
  }

  const plain = median(plainMs);
  const modes = Object.fromEntries(MODES.map((m) => [m, summarize(rounds.filter((r) => r.mode === m))]));
  const unm = median(windows.filter((w) => w.label === 'unmirrored').map((w) => w.avgWriteLatencyMs));
  const mir = median(windows.filter((w) => w.label === 'mirrored').map((w) => w.avgWriteLatencyMs));
  const ratios = {
    failureToHeartbeatOverPlainBoot: Object.fromEntries(
      MODES.map((m) => [m, ratio(modes[m]!.failureToHeartbeatMs, plain)]),
    ),
    /** The guest's boot on the standby (serial log opened -> heartbeat) against the plain boot: the same work. */
    guestBootOverPlainBoot: Object.fromEntries(MODES.map((m) => [m, ratio(modes[m]!.guestBootMs, plain)])),
    writeLatencyMirroredOverUnmirrored: ratio(mir, unm),
  };
  /** What failing over adds on top of a cold boot, in ms. */
  const addedMs = Object.fromEntries(
    MODES.map((m) => {
      const t = modes[m]!.failureToHeartbeatMs;
      return [m, t !== null && plain !== null ? t - plain : null];
    }),
  );

  console.log('');
  console.log(`medians of ${ROUNDS} rounds; plain QEMU cold boot to first heartbeat ${fmt(plain)}`);
  const cols = [
    'mode',
    'ok',
    'failure->HB',
    'detection',
    'fence wait',
    'takeover',
    'VM start',
    'guest boot',
    'lost writes',
    'x plain boot',
    '+ on plain',
  ];
  const row = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(10) : c.padStart(cols[i]!.length + 1))).join(' ');
  console.log(row(cols));
  for (const m of MODES) {
    const s = modes[m]!;
    const x = ratios.failureToHeartbeatOverPlainBoot[m] ?? null;
    console.log(
      row([
        m,
        `${s.failedOver}/${s.rounds}`,
        fmt(s.failureToHeartbeatMs),
        fmt(s.detectionMs),
        fmt(s.fencingWaitMs),
        fmt(s.takeoverMs),
        fmt(s.vmStartMs),
        fmt(s.guestBootMs),
        String(s.lostAcknowledgedWrites),
        x === null ? 'n/a' : x.toFixed(2),
        fmt(addedMs[m] ?? null),
      ]),
    );
    if (s.lostAcknowledgedWrites > 0) console.log(`!!! ${m}: ${s.lostAcknowledgedWrites} ACKNOWLEDGED WRITES LOST !!!`);
  }
  const f = (x: number | null): string => (x === null ? 'n/a' : x.toFixed(2));
  console.log(
    `write latency (median of ${windows.filter((w) => w.label === 'mirrored').length} mirrored and ${windows.filter((w) => w.label === 'unmirrored').length} unmirrored ${WINDOW_S} s windows, alternating): ` +
      `unmirrored ${f(unm)} ms, mirrored ${f(mir)} ms; ratio mirrored/unmirrored ${f(ratios.writeLatencyMirroredOverUnmirrored)}`,
  );

  const out =
    process.env['BENCH_OUT'] ??
    join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'failover.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(
    out,
    JSON.stringify(
      {
        bench: 'failover',
        accel: 'tcg',
        lab: '3 hosts (network namespaces on one machine, shared 2 cores)',
        guest: `tiny, ${MEMORY_MIB} MiB; durable counter every 50 ms (4 KiB O_DIRECT|O_DSYNC write)`,
        peer: 'plain qemu-system-x86_64 cold boot of the same kernel/initrd/cmdline/disk to the first heartbeat',
        measuredFrom:
          'failure = just before lab.fail; heartbeat = arrival in the standby serial.log (polled every 10 ms); steps = daemon.log times',
        writeLatency: 'query-blockstats wr_total_time_ns / wr_operations via /metrics on the primary',
        loadavg: loadavg(),
        rounds: ROUNDS,
        etcdLeader: {
          pin: 'moved to the flightdeck leader host before each failure',
          primary: 'moved to the failing primary before each failure',
          free: 'left where it was',
        }[ETCD_LEADER],
        plainColdBootMs: { median: plain, samples: plainMs },
        modes,
        writeWindows: windows,
        ratios,
        addedOnPlainBootMs: addedMs,
        samples: rounds,
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
