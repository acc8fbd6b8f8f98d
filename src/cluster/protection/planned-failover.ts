/**
 * Planned failover (`vm failover`): a protected VM moves to its standby with no data loss. The
 * primary pauses the guest and ends the (in sync) mirror; the standby turns its copy into the
 * VM's disk under an incoming QEMU; memory moves with migration's own memory transfer
 * (transfer.ts: events, not polling); the standby runs the guest; ownership follows in one
 * transaction; the old primary becomes the requested standby, so the mirror runs the other
 * way. Any failure before the standby runs the guest resumes it on the primary.
 */
import { FdError } from '../../core/errors.js';
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { freePort } from '../../core/ports.js';
import { DEFAULT_TUNABLES } from '../migration/plan.js';
import { moveMemory } from '../migration/transfer.js';
import type { Peers } from '../peer/client.js';
import { migrationAbort, protectionHandover, protectionHandoverFinish } from '../peer/contracts.js';
import type { DiskFiles } from '../provisioning/disks.js';
import { forceOff, type Runtime } from '../runtime/runtime.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';
import { stopMirrorJobs } from './mirror.js';
import type { StandbyCopies } from './standby.js';

export interface PlannedFailoverDeps {
  hostName: string;
  listenAddress: () => string;
  state: State;
  runtime: Runtime;
  disks: DiskFiles;
  peers: Peers;
  locks: KeyedLock;
  log: Logger;
  movedAway: (vmId: string) => void;
}

/** The guest is paused for the whole transfer, so it converges at once; this bounds its pause. */
const PAUSED_DOWNTIME_LIMIT_MS = 300;
const INCOMING_WAIT_MS = 30_000;

export interface FailoverResult {
  from: string;
  to: string;
  pausedMs: number;
}

/** Primary side: runs the failover task. */
export function plannedFailover(d: PlannedFailoverDeps, id: string, t: TaskHandle): Promise<FailoverResult> {
  return d.locks.run(id, async () => {
    const vmRec = await d.state.vms.fresh(id);
    if (!vmRec) throw new FdError('FD_VM_NOT_FOUND', `no VM ${id}`);
    const vm = vmRec.value;
    if (vm.host !== d.hostName) throw new FdError('FD_OWNER_MOVED', `VM ${vm.name} is owned by ${vm.host} now`);
    const rec = d.state.protection.get(id);
    if (!rec) throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`);
    if (rec.state !== 'protected' || !rec.standby)
      throw new FdError('FD_PROTECTION_NOT_READY', `${vm.name} is ${rec.state}; failover needs a standby in sync`, {
        hint: 'wait until `vm show` says protected',
      });
    const standby = rec.standby;
    const ctl = d.runtime.control(id);
    t.log(`pausing ${vm.name} on ${d.hostName}; its disks are already on ${standby}`);
    const t0 = Date.now();
    await ctl.run.pause();
    let handed: { migrateUri: string; diskPaths: Record<string, string> } | undefined;
    try {
      // Graceful: each job copies what it still has, so the standby's copy is complete.
      await stopMirrorJobs(
        ctl,
        vm.disks.map((dk) => dk.id),
        { graceful: true },
      );
      handed = await d.peers.call(standby, protectionHandover, { id, from: d.hostName });
      await moveMemory({
        ctl,
        uri: handed.migrateUri,
        tunables: { ...DEFAULT_TUNABLES, autoConverge: false, downtimeLimitMs: PAUSED_DOWNTIME_LIMIT_MS },
        task: t,
      });
      await d.peers.call(standby, protectionHandoverFinish, { id });
    } catch (err) {
      t.log(`failover failed, ${vm.name} resumes on ${d.hostName}: ${(err as Error).message}`);
      await ctl.run.resume().catch((e: unknown) => d.log.error('resuming after a failed failover', { err: String(e) }));
      if (handed)
        await d.peers
          .call(standby, migrationAbort, { id })
          .catch((e: unknown) => d.log.warn('the standby could not undo its side', { err: String(e) }));
      throw err;
    }
    const pausedMs = Date.now() - t0;
    // The guest runs on the standby: ownership moves and the mirror turns around, together.
    const now = new Date().toISOString();
    const turned = {
      ...rec,
      requestedStandby: d.hostName,
      primary: standby,
      standby: null,
      state: 'syncing' as const,
      progress: null,
      lastError: null,
      since: now,
      updatedAt: now,
    };
    for (
      let cur = vmRec;
      !(await d.state.vms.moveOwner({ vm: cur, to: standby, diskPaths: handed.diskPaths, protection: turned }));
    ) {
      const again = await d.state.vms.fresh(id);
      if (!again || again.value.host === standby) break;
      cur = again;
    }
    d.movedAway(id);
    await forceOff(d.runtime, id).catch((err: unknown) => d.log.warn('stopping the old primary', { err: String(err) }));
    await d.runtime.cleanup(id);
    await d.disks.removeVmDir(id);
    t.log(`${vm.name} runs on ${standby} (guest paused ${pausedMs} ms); mirroring back to ${d.hostName}`);
    return { from: d.hostName, to: standby, pausedMs };
  });
}

/** Standby side, step 1: the copy becomes the VM's disk under an incoming QEMU. */
export function handover(
  d: PlannedFailoverDeps,
  standby: StandbyCopies,
  req: { id: string; from: string },
): Promise<{ migrateUri: string; diskPaths: Record<string, string> }> {
  return d.locks.run(req.id, async () => {
    const { value: vm } = await d.state.vms.find(req.id);
    if (vm.host !== req.from) throw new FdError('FD_TAKEOVER_STALE', `${vm.name} is owned by ${vm.host}`);
    const local = await standby.live(req.id);
    if (!local) throw new FdError('FD_NO_STANDBY_COPY', `this host holds no live copy of ${vm.name}`);
    // A clean stop: the vdisk flushes and closes its copies.
    await standby.fence(local, { clean: true });
    const paths = await standby.adopt(req.id, local);
    const host = d.listenAddress();
    await d.runtime.cleanup(req.id);
    await d.runtime.startIncoming(vm, paths);
    const port = await freePort(host);
    const ctl = d.runtime.control(req.id);
    await ctl.migration.setCapabilities({ events: true });
    await ctl.migration.listen(`tcp:${host}:${port}`);
    return { migrateUri: `tcp:${host}:${port}`, diskPaths: paths };
  });
}

/** Standby side, step 2: the memory arrived; run the guest. */
export function handoverFinish(d: PlannedFailoverDeps, id: string): Promise<{ pid: number | null }> {
  return d.locks.run(id, async () => {
    const ctl = d.runtime.control(id);
    const end = await ctl.migration.waitFinal(INCOMING_WAIT_MS);
    if (end.status !== 'completed')
      throw new FdError('FD_FAILOVER_FAILED', `the standby's incoming migration is ${end.status}`);
    await ctl.run.resume();
    return { pid: (await d.runtime.status(id)).pid };
  });
}
