/**
 * One unplanned failover of a protected tiny VM in the lab, timed from outside: create the VM on
 * `primary`, mirror it to `standby`, let it write, inject the failure, and follow both serial
 * logs and the daemons' logs until the guest's first heartbeat on the standby. Then heal the
 * host, check that one QEMU is left, and delete the VM.
 *
 * Lost acknowledged writes: the guest prints FD-COUNTER n only after n is durable (O_DSYNC);
 * booted on the standby it prints FD-COUNTER-START m, what it found on the mirror. Every counter
 * the old primary printed, up to the moment its QEMU is gone for good (a frozen one is watched
 * through its thaw), must be on the copy: lost = max(0, highest printed - m).
 */
import type { FailMode, Lab } from '../../src/lab/lab.js';
import { sleep, waitFor } from '../../src/core/process.js';
import { labJson, labQemuHosts } from '../../test/helpers/lab.js';
import { daemonLogSince, firstEntry } from './daemon-log.js';
import { etcdLeaderHost, moveEtcdLeader } from './etcd-leader.js';
import { SerialTail } from './serial-tail.js';

export interface RoundResult {
  mode: FailMode;
  round: number;
  vm: string;
  leader: string;
  primary: string;
  standby: string;
  /** The guest's first heartbeat arrived on the standby within the deadline. */
  failedOver: boolean;
  error: string | null;
  /** How long `lab.fail` took (the failure time is taken just before it). */
  injectMs: number;
  /** failure -> first heartbeat on the standby (detection + fencing wait + takeover and boot). */
  failureToHeartbeatMs: number | null;
  /** failure -> the leader logs `host lost` (the host's alive key expired). */
  detectionMs: number | null;
  /** `host lost` -> `failing over` (FENCE_MARGIN_MS and the controller's tick). */
  fencingWaitMs: number | null;
  /** `failing over` -> first heartbeat on the standby. */
  takeoverBootMs: number | null;
  /** Of which: `failing over` -> the standby logs `took over a VM from a lost host`. */
  takeoverMs: number | null;
  /** Of which: `took over` -> first heartbeat (the VM's start and the guest's boot). */
  bootMs: number | null;
  /** Of that: `took over` -> the standby's QEMU opens the serial log (the daemon starting the VM). */
  vmStartMs: number | null;
  /** ... and serial log opened -> first heartbeat (the guest booting: compare with the plain boot). */
  guestBootMs: number | null;
  /** failure -> the new primary starts mirroring the VM to a new standby (null: not in the round). */
  resyncStartMs: number | null;
  /** failure -> no QEMU of the VM on the old primary any more (null: still there, frozen). */
  oldQemuGoneMs: number | null;
  lastCounterPrintedAtFailure: string | null;
  /** failure -> the last FD-COUNTER line from the old primary (after `healAtMs`: printed by a thawed copy). */
  lastCounterArrivedMs: number | null;
  /** failure -> the start of `lab.heal` on the old primary. */
  healAtMs: number | null;
  lastCounterPrintedOnOldPrimary: string | null;
  counterStartOnStandby: string | null;
  lostAcknowledgedWrites: number | null;
  /** Hosts running a QEMU of the VM when its first heartbeat arrived on the standby. */
  qemuHostsAtTakeover: string[];
  /** ... and once the old primary was healed and given a few seconds. */
  qemuHostsAfterHeal: string[];
  /** The host whose etcd member led the raft group just before the failure. */
  etcdLeaderAtFailure: string | null;
  /** Hosts other than the failed one whose fence keeper logged that it lost its lease (and killed what). */
  selfFencedElsewhere: string[];
  /** The daemons' warn/error lines from the failure to the end of the round (for the report). */
  logLines: string[];
}

interface VmShow {
  id: string;
  host: string;
  state: string;
  protection: { state: string; standby: string | null } | null;
}
interface Task {
  state: string;
  error: { code: string; message: string } | null;
}

const MEMORY = '128M';

export async function failoverRound(
  lab: Lab,
  mode: FailMode,
  round: number,
  hosts: { leader: string; primary: string; standby: string },
  opts: { etcdLeader: 'pin' | 'primary' | 'free' },
): Promise<RoundResult> {
  const { leader, primary, standby } = hosts;
  const name = `fo${mode.slice(0, 4)}${round}`;
  const host = (h: string): { name: string; dataDir: string } => lab.host(h);
  const serialOf = (h: string, id: string): string => `${lab.host(h).dataDir}/run/${id}/q/serial.log`;

  await labJson(lab, primary, [
    'vm',
    'create',
    name,
    '--image',
    'tiny',
    '--memory',
    MEMORY,
    '--host',
    primary,
    '--start',
    'true',
  ]);
  const vm = await labJson<VmShow>(lab, primary, ['vm', 'show', name]);
  const task = await labJson<Task>(lab, primary, ['vm', 'protect', name, '--standby', standby]);
  if (task.state !== 'succeeded') throw new Error(`vm protect ${name}: ${JSON.stringify(task.error)}`);
  const old = new SerialTail(serialOf(primary, vm.id), 20).start();
  const fresh = new SerialTail(serialOf(standby, vm.id), 10).start();
  const res: RoundResult = {
    mode,
    round,
    vm: name,
    leader,
    primary,
    standby,
    failedOver: false,
    error: null,
    injectMs: 0,
    failureToHeartbeatMs: null,
    detectionMs: null,
    fencingWaitMs: null,
    takeoverBootMs: null,
    takeoverMs: null,
    bootMs: null,
    vmStartMs: null,
    guestBootMs: null,
    oldQemuGoneMs: null,
    resyncStartMs: null,
    lastCounterPrintedAtFailure: null,
    lastCounterArrivedMs: null,
    healAtMs: null,
    lastCounterPrintedOnOldPrimary: null,
    counterStartOnStandby: null,
    lostAcknowledgedWrites: null,
    qemuHostsAtTakeover: [],
    qemuHostsAfterHeal: [],
    etcdLeaderAtFailure: null,
    selfFencedElsewhere: [],
    logLines: [],
  };
  let t0 = 0;
  try {
    // Mirrored and writing: a few counters past the end of the initial sync.
    const base = (await waitFor('the guest writing counters', () => old.maxCounter ?? undefined, {
      timeoutMs: 120_000,
      intervalMs: 100,
    })) as bigint;
    await waitFor('counters after protect', () => ((old.maxCounter ?? 0n) > base + 5n ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 100,
    });

    if (opts.etcdLeader !== 'free') await moveEtcdLeader(lab, opts.etcdLeader === 'pin' ? leader : primary);
    res.etcdLeaderAtFailure = await etcdLeaderHost(lab);
    t0 = Date.now();
    await lab.fail(primary, mode);
    res.injectMs = Date.now() - t0;
    await old.poll();
    res.lastCounterPrintedAtFailure = old.maxCounter?.toString() ?? null;

    // Until the first heartbeat on the standby: when the old QEMU disappears, too.
    const deadline = t0 + 90_000;
    let lastScan = 0;
    while (fresh.firstHeartbeatAt === null && Date.now() < deadline) {
      if (res.oldQemuGoneMs === null && Date.now() - lastScan > 200) {
        lastScan = Date.now();
        if (!(await labQemuHosts(lab, vm.id)).includes(primary)) res.oldQemuGoneMs = Date.now() - t0;
      }
      await sleep(5);
    }
    if (fresh.firstHeartbeatAt !== null) {
      res.failedOver = true;
      res.qemuHostsAtTakeover = await labQemuHosts(lab, vm.id);
      res.failureToHeartbeatMs = fresh.firstHeartbeatAt - t0;
      await waitFor('the guest reading its counter on the standby', () => fresh.counterStart ?? undefined, {
        timeoutMs: 60_000,
        intervalMs: 20,
      });
    } else {
      res.error = `no heartbeat on ${standby} within ${deadline - t0} ms of the ${mode} of ${primary}`;
      res.qemuHostsAtTakeover = await labQemuHosts(lab, vm.id);
    }
  } finally {
    if (t0) {
      res.healAtMs = Date.now() - t0;
      await lab.heal(primary).catch((err: unknown) => (res.error ??= `heal ${primary}: ${String(err)}`));
      await lab
        .waitHostStates(leader, { online: lab.hosts.map((h) => h.name) }, 90_000)
        .catch((err: unknown) => (res.error ??= String(err)));
      // A thawed or reconnected host kills its stale copy: give it a moment, then look.
      await waitFor(
        'one QEMU for the VM',
        async () => ((await labQemuHosts(lab, vm.id)).length === 1 ? true : undefined),
        { timeoutMs: 15_000, intervalMs: 100 },
      ).catch(() => undefined);
      await sleep(2000);
      res.qemuHostsAfterHeal = await labQemuHosts(lab, vm.id);
      if (res.oldQemuGoneMs === null && !res.qemuHostsAfterHeal.includes(primary)) res.oldQemuGoneMs = Date.now() - t0; // gone only after the heal (freeze)
    }
    await old.stop();
    await fresh.stop();
  }

  res.lastCounterPrintedOnOldPrimary = old.maxCounter?.toString() ?? null;
  const lastOld = old.counters.at(-1);
  if (lastOld && t0) res.lastCounterArrivedMs = lastOld.at - t0;
  res.counterStartOnStandby = fresh.counterStart?.toString() ?? null;
  if (old.maxCounter !== null && fresh.counterStart !== null)
    res.lostAcknowledgedWrites = Math.max(0, Number(old.maxCounter - fresh.counterStart));

  const logs = (await Promise.all(lab.hosts.map((h) => daemonLogSince(host(h.name), t0 - 1000)))).flat();
  const lost = firstEntry(
    logs.filter((e) => e.at >= t0),
    'host lost',
    { host: primary },
  );
  const failing = firstEntry(logs, 'failing over', { vm: name });
  const took = firstEntry(logs, 'took over a VM from a lost host', { vm: name });
  if (lost) res.detectionMs = lost.at - t0;
  const resync = firstEntry(
    logs.filter((e) => e.at >= t0 && e.host === standby),
    'mirroring to the standby',
    { vm: name },
  );
  if (resync) res.resyncStartMs = resync.at - t0;
  if (lost && failing) res.fencingWaitMs = failing.at - lost.at;
  if (failing && fresh.firstHeartbeatAt !== null) res.takeoverBootMs = fresh.firstHeartbeatAt - failing.at;
  if (failing && took) res.takeoverMs = took.at - failing.at;
  if (took && fresh.firstHeartbeatAt !== null) res.bootMs = fresh.firstHeartbeatAt - took.at;
  if (took && fresh.appearedAt !== null) res.vmStartMs = fresh.appearedAt - took.at;
  if (fresh.appearedAt !== null && fresh.firstHeartbeatAt !== null)
    res.guestBootMs = fresh.firstHeartbeatAt - fresh.appearedAt;
  res.selfFencedElsewhere = logs
    .filter((e) => e.at >= t0 && e.host !== primary && e.msg.startsWith('the fence keeper killed guarded VMs'))
    .map((e) => {
      const killed = Array.isArray(e.fields['vms']) ? e.fields['vms'].length : 0;
      return `${e.host} at +${e.at - t0} ms (killed ${killed} VM${killed === 1 ? '' : 's'}${(e.fields['vms'] as unknown[] | undefined)?.includes(vm.id) ? `, this one` : ''})`;
    });
  res.logLines = logs
    .filter((e) => e.at >= t0 && (e.fields['level'] === 'warn' || e.fields['level'] === 'error'))
    .sort((a, b) => a.at - b.at)
    .map((e) => `${e.host} +${e.at - t0}ms ${JSON.stringify(e.fields)}`);

  // The VM is degraded and re-syncing after the failover; a forced delete ends it either way.
  await waitFor(
    `vm delete ${name}`,
    () =>
      labJson(lab, leader, ['vm', 'delete', name, '--force', 'true']).then(
        () => true,
        () => undefined,
      ),
    { timeoutMs: 60_000, intervalMs: 2000 },
  );
  return res;
}
