/**
 * Benchmark: live migration inside the lab (three hosts in network namespaces, a 3-member
 * etcd, a cluster network across them), a 512 MiB tiny guest idle and dirtying memory fast,
 * ours against plain QEMU between the same two namespaces, in the same run, TCG.
 *
 *   ours:  `flightdeck vm migrate` h1 -> h2 with its defaults; local VHD disks mirrored to h2.
 *   plain: two qemu-system-x86_64 started with `ip netns exec` in h1 and h2, QMP `migrate`
 *          with QEMU's defaults (128 MiB/s cap, 300 ms downtime limit, no auto-converge); the
 *          disk is shared storage (one raw file both open), so no disk data moves.
 *
 * Both guests sit on the same cluster network (VXLAN + a bridge on each host; the plain guest
 * on a tap of that bridge, with the MAC and address of a VM record made for it), so a client
 * in h3 keeps one TCP connection to the guest's echo service through the move. Per case: the
 * downtime the guest's users observe, twice: the largest gap between heartbeat lines as they
 * arrive on the hosts' serial sockets, and the longest echo round trip seen by the client in
 * h3; QEMU's own downtime; the total time; whether it converged within the cap.
 *
 *   npm run build && node dist/bench/migration/lab.js
 *   env: BENCH_ROUNDS=1 BENCH_MEMORY_MIB=512 BENCH_DIRTY_MB=256 BENCH_CAP_S=60
 *        BENCH_CASES=plain-idle,ours-idle,plain-dirty,ours-dirty BENCH_OUT=path
 *        BENCH_OURS='{"downtimeLimit":"100ms"}' (options of our migrate; default: our defaults)
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, sleep, waitFor } from '../../src/core/process.js';
import { buildTinyImage, withProbes } from '../../src/host/images/tiny.js';
import { Lab } from '../../src/lab/lab.js';
import { Store } from '../../src/cluster/state/store.js';
import type { ImageRecord } from '../../src/cluster/state/model.js';
import { labJson } from '../../test/helpers/lab.js';
import { EchoProbe } from './echo.js';
import { HeartbeatWatch, nowMs } from './heartbeats.js';
import { plainCase, type PlainPlacement } from './plain.js';
import { type CaseResult, observe, settle } from './result.js';

/** BENCH_OURS='{"downtimeLimit":"100ms"}': migrate options for ours (default: none, our defaults). */
const OUR_TUNABLES = JSON.parse(process.env['BENCH_OURS'] ?? '{}') as Record<string, unknown>;

const MEMORY_MIB = Number(process.env['BENCH_MEMORY_MIB'] ?? 512);
const DIRTY_MB = Number(process.env['BENCH_DIRTY_MB'] ?? 256);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 1);
const CAP_MS = Number(process.env['BENCH_CAP_S'] ?? 60) * 1000;
const DIRTY_ARG = `fd.dirty_mb=${DIRTY_MB}`;
const CASES = (process.env['BENCH_CASES'] ?? 'plain-idle,ours-idle,plain-dirty,ours-dirty').split(',');
const PREFIX = `bm${process.pid % 10000}`;
const NET = { name: 'bnet', cidr: '10.98.0.0/24', vni: 4343 };
const TAP = 'fdbench0';

interface Task {
  id: string;
  state: string;
  result: { downtimeMs: number; totalTimeMs: number; ramBytes: number; diskBytes: number; setupTimeMs: number } | null;
  error: { code: string; message: string } | null;
  log: unknown[];
}

const fmt = (ms: number | null | undefined): string => (ms === null || ms === undefined ? '-' : `${ms.toFixed(0)} ms`);
const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a !== null && a !== undefined && b ? a / b : null;

function line(c: CaseResult): string {
  return (
    `${c.label.padEnd(12)} ${c.converged ? 'converged       ' : 'DID NOT CONVERGE'} ` +
    `heartbeat gap ${fmt(c.observedDowntimeMs)} (floor ${fmt(c.baselineGapMs)}), ` +
    `echo max RTT ${fmt(c.echo?.maxRttMs)} (floor ${fmt(c.echo?.baselineRttMs)}, lost ${c.echo?.lost ?? '-'}, ` +
    `${c.echo?.closed ? 'CLOSED' : 'open'}), QEMU downtime ${fmt(c.qemuDowntimeMs)}, total ${fmt(c.wallMs)}, ` +
    `RAM sent ${c.ramBytes === null ? '-' : `${(c.ramBytes / 2 ** 20).toFixed(0)} MiB`}, ` +
    `dirty rate ${c.dirtyRateMiBps.toFixed(0)} MiB/s`
  );
}

/** Ours: a VM of `image` on h1 migrated to h2 through the API, the client pinging it from h3. */
async function oursCase(lab: Lab, label: string, vmName: string, image: string): Promise<CaseResult> {
  const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);
  const name = `bench-${vmName}`;
  await json('h1', [
    'vm',
    'create',
    name,
    '--image',
    image,
    '--memory',
    `${MEMORY_MIB}M`,
    '--network',
    NET.name,
    '--host',
    'h1',
    '--start',
    'true',
  ]);
  const vm = await json<{ id: string; nics: { ip: string }[] }>('h1', ['vm', 'show', name]);
  const watch = new HeartbeatWatch();
  const echo = new EchoProbe(lab.host('h3').netns, vm.nics[0]!.ip);
  try {
    await watch.attach(join(lab.host('h1').dataDir, 'run', vm.id, 'serial.sock'));
    await settle(watch, image === 'tiny-dirty' ? DIRTY_MB : 0);
    // The target's serial socket appears when its QEMU starts (-incoming defer): read it from then.
    const onTarget = watch.attach(join(lab.host('h2').dataDir, 'run', vm.id, 'serial.sock'), {
      waitMs: CAP_MS + 60_000,
    });
    onTarget.catch(() => undefined);
    const dirtyRate = watch.dirtyRateMiBps();
    const baseline = watch.maxGap(nowMs() - 3000, nowMs()).gapMs;
    const echoing = await echo.tryStart();
    await sleep(3000);
    const t0 = nowMs();
    const res0 = await lab.api<Task>('h1', 'POST', `/api/v1/vms/${vm.id}/actions/migrate`, {
      to: 'h2',
      ...OUR_TUNABLES,
    });
    if (res0.status !== 202) throw new Error(`migrate: ${res0.status} ${JSON.stringify(res0.body)}`);
    let t: Task;
    let converged = false;
    for (;;) {
      t = (await lab.api<Task>('h1', 'GET', `/api/v1/tasks/${res0.body.id}`)).body;
      if (t.state === 'succeeded') {
        converged = true;
        break;
      }
      if (t.state === 'failed' || t.state === 'cancelled')
        throw new Error(`our migration ${t.state}: ${JSON.stringify(t.error)}`);
      if (nowMs() - t0 > CAP_MS) {
        await lab.api('h1', 'POST', `/api/v1/tasks/${t.id}/actions/cancel`);
        t = await json<Task>('h1', ['task', 'wait', t.id]);
        break;
      }
      await sleep(20);
    }
    const wallMs = nowMs() - t0;
    if (converged) await onTarget;
    const r = t.result;
    return await observe(
      watch,
      {
        label,
        converged,
        t0,
        wallMs,
        reportedTotalMs: r?.totalTimeMs ?? null,
        qemuDowntimeMs: r?.downtimeMs ?? null,
        ramBytes: r?.ramBytes ?? null,
        dirtyRateMiBps: dirtyRate,
        baselineGapMs: baseline,
        extra: { diskBytes: r?.diskBytes ?? null, setupTimeMs: r?.setupTimeMs ?? null, taskLog: t.log },
      },
      echoing,
    );
  } finally {
    watch.close();
    echo.close();
    // Stopped, not deleted: a new VM would get this one's address, which DHCP still leases to
    // this MAC for a while (the next guest then got no address). The lab goes at the end.
    const owner = (await json<{ host: string }>('h1', ['vm', 'show', name])).host;
    await json(owner, ['vm', 'stop', name]).catch(() => undefined);
  }
}

/** A tap on the cluster network's bridge in host `name`, for a plain QEMU there. */
async function plainPlacement(lab: Lab, name: string, bridge: string, mac: string): Promise<PlainPlacement> {
  const ns = lab.host(name).netns;
  await run('ip', ['-n', ns, 'link', 'del', TAP], { allowFail: true });
  await run('ip', ['-n', ns, 'tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  // Every host brings the cluster network's bridge up when it sees the network record.
  await waitFor(
    `bridge ${bridge} on ${name}`,
    async () =>
      (await run('ip', ['-n', ns, 'link', 'show', bridge], { allowFail: true })).code === 0 ? true : undefined,
    { timeoutMs: 30_000, intervalMs: 200 },
  );
  await run('ip', ['-n', ns, 'link', 'set', TAP, 'master', bridge, 'up']);
  return {
    prefix: ['ip', 'netns', 'exec', ns],
    netdev: [
      '-netdev',
      `tap,id=n0,ifname=${TAP},script=no,downscript=no`,
      '-device',
      `virtio-net-pci,netdev=n0,mac=${mac},romfile=`,
    ],
  };
}

async function main(): Promise<void> {
  const img = withProbes(await buildTinyImage());
  const root = await mkdtemp('/tmp/fd-bench-mig-lab-');
  const rounds: Record<string, CaseResult[]> = {};
  const lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
  try {
    const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);
    await json('h1', ['image', 'build', 'tiny', '--probes']);
    const store = new Store([...lab.etcdEndpoints]);
    try {
      const tiny = (await store.get<ImageRecord>('images/tiny'))?.value;
      if (!tiny?.cmdline) throw new Error('the tiny image record has no cmdline');
      await store.put<ImageRecord>('images/tiny-dirty', {
        ...tiny,
        name: 'tiny-dirty',
        cmdline: `${tiny.cmdline} ${DIRTY_ARG}`,
      });
    } finally {
      store.close();
    }
    await json('h1', ['network', 'create', NET.name, '--cidr', NET.cidr, '--vni', String(NET.vni)]);
    const net = (await json<{ name: string; bridge: string }[]>('h1', ['network', 'list'])).find(
      (n) => n.name === NET.name,
    )!;
    // A VM record that never starts: its MAC gets a fixed address from every host's DHCP.
    await json('h1', ['vm', 'create', 'plain-ref', '--disk-size', '64M', '--network', NET.name, '--host', 'h1']);
    const ref = await json<{ nics: { mac: string; ip: string }[] }>('h1', ['vm', 'show', 'plain-ref']);
    const { mac, ip } = ref.nics[0]!;
    const src = await plainPlacement(lab, 'h1', net.bridge, mac);
    const dst = await plainPlacement(lab, 'h2', net.bridge, mac);
    const plainLab = { src, dst, listenIp: lab.host('h2').ip, echo: new EchoProbe(lab.host('h3').netns, ip) };

    const raw = join(root, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img.disk, raw]);
    const guest = { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline };
    const dirtyGuest = { ...guest, cmdline: `${img.cmdline} ${DIRTY_ARG}` };
    const cases: [string, (round: number) => Promise<CaseResult>][] = [
      ['plain-idle', () => plainCase(root, 'plain-idle', guest, raw, MEMORY_MIB, CAP_MS, plainLab)],
      ['ours-idle', (r) => oursCase(lab, 'ours-idle', `idle${r}`, 'tiny')],
      ['plain-dirty', () => plainCase(root, 'plain-dirty', dirtyGuest, raw, MEMORY_MIB, CAP_MS, plainLab)],
      ['ours-dirty', (r) => oursCase(lab, 'ours-dirty', `dirty${r}`, 'tiny-dirty')],
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
    await Lab.destroy(PREFIX);
    await rm(root, { recursive: true, force: true });
  }
  const median = (xs: (number | null | undefined)[]): number | null => {
    const v = xs.filter((x): x is number => typeof x === 'number').sort((p, q) => p - q);
    return v.length ? v[Math.floor(v.length / 2)]! : null;
  };
  const results = Object.fromEntries(
    Object.entries(rounds).map(([k, rs]) => [
      k,
      {
        label: k,
        rounds: rs.length,
        convergedRounds: rs.filter((c) => c.converged).length,
        converged: rs.every((c) => c.converged),
        heartbeatGapMs: median(rs.map((c) => c.observedDowntimeMs)),
        heartbeatFloorMs: median(rs.map((c) => c.baselineGapMs)),
        echoMaxRttMs: median(rs.map((c) => c.echo?.maxRttMs)),
        echoFloorMs: median(rs.map((c) => c.echo?.baselineRttMs)),
        echoLost: Math.max(...rs.map((c) => c.echo?.lost ?? 0)),
        echoConnectionClosed: rs.some((c) => c.echo?.closed),
        qemuDowntimeMs: median(rs.map((c) => c.qemuDowntimeMs)),
        totalMs: median(rs.map((c) => c.wallMs)),
        runningOnTargetMs: median(rs.map((c) => c.runningOnTargetMs)),
        ramBytes: median(rs.map((c) => c.ramBytes)),
        dirtyRateMiBps: median(rs.map((c) => c.dirtyRateMiBps)),
      },
    ]),
  );
  const ratios = Object.fromEntries(
    (['idle', 'dirty'] as const).flatMap((k) => {
      const o = results[`ours-${k}`];
      const p = results[`plain-${k}`];
      if (!o || !p) return [];
      return [
        [
          k,
          {
            heartbeatGap: ratio(o.heartbeatGapMs, p.heartbeatGapMs),
            echoMaxRtt: ratio(o.echoMaxRttMs, p.echoMaxRttMs),
            qemuDowntime: p.converged ? ratio(o.qemuDowntimeMs, p.qemuDowntimeMs) : null,
            totalTime: p.converged ? ratio(o.totalMs, p.totalMs) : null,
            note: p.converged
              ? undefined
              : `plain QEMU did not converge within ${CAP_MS / 1000} s (its gaps are those of the cancel, not of a switch-over)`,
          },
        ],
      ];
    }),
  );
  for (const [k, r] of Object.entries(ratios)) {
    const f = (x: number | null): string => (x === null ? 'n/a' : x.toFixed(2));
    console.log(
      `ratio ours/plain (${k}): heartbeat gap ${f(r.heartbeatGap)}, echo max RTT ${f(r.echoMaxRtt)}, QEMU downtime ${f(r.qemuDowntime)}, total time ${f(r.totalTime)}${r.note ? ` (${r.note})` : ''}`,
    );
  }
  const out =
    process.env['BENCH_OUT'] ??
    join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'results', 'migration-lab.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(
    out,
    JSON.stringify(
      {
        bench: 'migration-lab',
        accel: 'tcg',
        network: 'lab: 3 hosts in network namespaces, 3-member etcd, VXLAN cluster network; client in h3',
        memoryMiB: MEMORY_MIB,
        dirtier: DIRTY_ARG,
        capS: CAP_MS / 1000,
        plainQemu: 'QMP migrate h1 -> h2 with QEMU defaults (128 MiB/s cap); disk on shared storage (one raw file)',
        ours: 'flightdeck vm migrate h1 -> h2; local VHD disks mirrored to the target (no shared storage)',
        oursOptions: OUR_TUNABLES,
        loadavg: loadavg(),
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
