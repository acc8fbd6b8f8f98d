/**
 * VM mirroring, as one object for the rest of the host: the user's verbs (protect, unprotect,
 * planned failover, and what a deleted VM leaves), the primary's loop (primary.ts), the
 * standby's copies (standby.ts), unplanned takeover (takeover.ts) and planned failover
 * (planned-failover.ts). A protected VM's disks are mirrored by its QEMU into a vdisk on the
 * standby (mirror.ts): every acknowledged write is on both hosts.
 */
import { FdError } from '../../core/errors.js';
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import type { Peers } from '../peer/client.js';
import { protectionRelease } from '../peer/contracts.js';
import type { DiskFiles } from '../provisioning/disks.js';
import type { Runtime } from '../runtime/runtime.js';
import type { ProtectionRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';
import { stopMirrorJobs } from './mirror.js';
import { handover, handoverFinish, plannedFailover, type FailoverResult } from './planned-failover.js';
import { chooseStandby, MirrorKeeper } from './primary.js';
import { StandbyCopies } from './standby.js';
import { takeover } from './takeover.js';

export interface ProtectionDeps {
  hostName: string;
  listenAddress: () => string;
  dataDir: string;
  state: State;
  runtime: Runtime;
  disks: DiskFiles;
  peers: Peers;
  locks: KeyedLock;
  log: Logger;
  /** Starts a VM this host now owns (takeover), guarded by the fence first. */
  adopted: (id: string) => Promise<void>;
  movedAway: (id: string) => void;
}

/** A protect task fails when its mirror stayed degraded (with a reason) this long. */
const DEGRADED_GIVE_UP_MS = 20_000;

export class Protection {
  readonly standby: StandbyCopies;
  private readonly keeper: MirrorKeeper;

  constructor(private readonly d: ProtectionDeps) {
    this.standby = new StandbyCopies(d);
    this.keeper = new MirrorKeeper(d, this.standby);
  }

  start(): void {
    this.keeper.start();
  }

  close(): void {
    this.keeper.close();
  }

  /** Refuses a protect that cannot work (checked before the task exists; changes nothing). */
  async checkProtect(vmId: string, standby: string | null): Promise<VmRecord> {
    const { value: vm } = await this.d.state.vms.find(vmId);
    if (standby === vm.host)
      throw new FdError('FD_PROTECT_SAME_HOST', `${standby} runs ${vm.name}; the standby must be another host`);
    if (standby && !this.d.state.hosts.record(standby)) throw new FdError('FD_HOST_NOT_FOUND', `no host ${standby}`);
    if (standby && !this.d.state.hosts.isAlive(standby))
      throw new FdError('FD_HOST_UNAVAILABLE', `host ${standby} is lost; it cannot take a standby copy now`);
    if (!standby && !chooseStandby(this.d, vm, { requestedStandby: null, standby: null }))
      throw new FdError('FD_NO_STANDBY_HOST', `no host other than ${vm.host} can take a copy of ${vm.name}`, {
        hint: 'mirroring needs a second host: flightdeck cluster join (see the README), or the lab',
      });
    return vm;
  }

  async protect(vmId: string, standby: string | null, t: TaskHandle): Promise<ProtectionRecord> {
    const vm = await this.checkProtect(vmId, standby);
    const now = new Date().toISOString();
    const prev = this.d.state.protection.get(vm.id);
    if (prev && prev.requestedStandby !== standby && prev.standby) {
      // A new standby was asked for: drop the current mirror, the loop starts the new one.
      await this.dropMirror(vm, prev.standby, 'the standby was changed');
    }
    const same = prev?.requestedStandby === standby;
    await this.d.state.protection.put({
      vmId: vm.id,
      requestedStandby: standby,
      primary: vm.host,
      standby: same ? (prev?.standby ?? null) : null,
      state: same ? prev.state : 'syncing',
      progress: null,
      lastError: null,
      since: prev?.since ?? now,
      updatedAt: now,
    });
    this.keeper.retryNow(vm.id);
    t.log(`protecting ${vm.name}${standby ? ` with a standby on ${standby}` : ''}`);
    const st = await this.d.runtime.status(vm.id);
    if (st.state !== 'running' && st.state !== 'paused') {
      t.log(`${vm.name} is ${st.state}: the mirror starts when it runs`);
      return this.d.state.protection.get(vm.id)!;
    }
    // The initial sync is this task's progress; done when protected. A mirror that cannot
    // start (degraded for a while with a reason) fails the task; the loop keeps trying.
    let degradedSince = 0;
    for (;;) {
      if (t.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'protect cancelled (the mirror keeps syncing)');
      const rec = this.d.state.protection.get(vm.id);
      if (!rec) throw new FdError('FD_PROTECTION_REMOVED', `${vm.name} was unprotected meanwhile`);
      degradedSince = rec.state === 'degraded' && rec.lastError ? degradedSince || Date.now() : 0;
      if (degradedSince && Date.now() - degradedSince > DEGRADED_GIVE_UP_MS)
        throw new FdError('FD_PROTECTION_DEGRADED', `${vm.name} is not mirrored yet: ${rec.lastError}`, {
          hint: 'it keeps trying; see `vm show` for its protection state, or `vm unprotect` it',
        });
      if (rec.progress)
        t.progress({
          done: rec.progress.done,
          total: Math.max(rec.progress.total, 1),
          unit: 'bytes',
          ratePerS: 0,
          etaS: null,
          message: `mirror to ${rec.standby ?? '?'}`,
        });
      if (rec.state === 'protected') {
        t.log(`${vm.name} is protected: every write lands on ${rec.primary} and ${rec.standby} before it completes`);
        return rec;
      }
      await this.d.state.protection.nextChange(vm.id, 1000);
    }
  }

  async unprotect(vmId: string, t: TaskHandle): Promise<{ unprotected: string }> {
    const { value: vm } = await this.d.state.vms.find(vmId);
    const rec = this.d.state.protection.get(vm.id);
    if (!rec) throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`);
    await this.d.locks.run(vm.id, async () => {
      await this.d.state.protection.remove(vm.id);
      if (rec.standby) await this.dropMirror(vm, rec.standby, 'unprotected');
    });
    t.log(`${vm.name} is no longer mirrored`);
    return { unprotected: vm.name };
  }

  /** A VM being deleted: its protection record goes, and the standby drops its copy. */
  async forget(vm: VmRecord): Promise<void> {
    const rec = this.d.state.protection.get(vm.id);
    if (!rec) return;
    await this.d.state.protection.remove(vm.id);
    if (rec.standby) await this.dropMirror(vm, rec.standby, 'the VM was deleted');
  }

  /** Ends the mirror jobs here and tells the standby to drop its copy. */
  private async dropMirror(vm: VmRecord, standby: string, why: string): Promise<void> {
    const st = await this.d.runtime.status(vm.id);
    if (st.state === 'running' || st.state === 'paused')
      await stopMirrorJobs(
        this.d.runtime.control(vm.id),
        vm.disks.map((dk) => dk.id),
        { graceful: false },
      ).catch((err: unknown) => this.d.log.warn('ending mirror jobs', { vm: vm.name, err: String(err) }));
    if (!this.d.state.hosts.record(standby)) return;
    await this.d.peers
      .call(standby, protectionRelease, { id: vm.id })
      .catch((err: unknown) =>
        this.d.log.warn('standby could not drop its copy', { vm: vm.name, why, err: String(err) }),
      );
  }

  // ---- planned and unplanned failover, and the standby's steps ----

  plannedFailover(id: string, t: TaskHandle): Promise<FailoverResult> {
    return plannedFailover(this.d, id, t);
  }

  takeover(req: { id: string; from: string }): Promise<{ host: string; state: string }> {
    return takeover(this.d, this.standby, req);
  }

  handover(req: { id: string; from: string }): Promise<{ migrateUri: string; diskPaths: Record<string, string> }> {
    return handover(this.d, this.standby, req);
  }

  handoverFinish(id: string): Promise<{ pid: number | null }> {
    return handoverFinish(this.d, id);
  }
}
