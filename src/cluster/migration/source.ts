/**
 * The source host's side of a live migration, the one that runs the task:
 *   1. place the VM on a target (or take the one asked for) and record the intent;
 *   2. the target prepares (migration/target.ts); disks and memory move (transfer.ts);
 *   3. the guest is paused here and in sync there: the target runs it (`finish`), then the
 *      source's idle mirrors are released; ownership moves in one transaction and the source's
 *      processes and files go.
 * Any failure before the target runs the guest resumes it here and has the target remove its
 * side; a target that cannot be reached is asked again in the background. When `finish`
 * itself fails, the source stays paused until the target says whether it ran the guest: there
 * is exactly one running copy at every instant.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import { FdError, isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { sleep } from '../../core/process.js';
import { placeIn } from '../clustering/placement.js';
import type { Peers } from '../peer/client.js';
import { migrationAbort, migrationFinish, migrationPrepare, migrationState } from '../peer/contracts.js';
import type { DiskFiles } from '../provisioning/disks.js';
import { forceOff, type Runtime } from '../runtime/runtime.js';
import type { MigrationIntent, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';
import type { MigrationResult, MigrationTunables } from './plan.js';
import { migrateFromSource, releaseSourceMirrors, type MovedState } from './transfer.js';

export interface MigrationSourceDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  disks: DiskFiles;
  peers: Peers;
  locks: KeyedLock;
  log: Logger;
  /** True once the daemon stops: background retries end. */
  closed: () => boolean;
  /** The VM is owned elsewhere now (what this host kept about it can go). */
  movedAway: (vmId: string) => void;
}

/** Calls to a migration target after a failure: short, a cut link must not hold the task. */
const ABORT_CALL_MS = 10_000;
const ABORT_RETRY_MS = 3_000;
/** The guest is paused until finish answers (or resolveFinishing finds out). */
const FINISH_CALL_MS = 30_000;

export class MigrationSource {
  /** VMs this daemon is migrating now (recovery leaves them alone). */
  readonly active = new Set<string>();

  constructor(private readonly d: MigrationSourceDeps) {}

  /** Moves a running VM to `to` (or where placement says), disks and all. */
  migrate(id: string, to: string | undefined, tunables: MigrationTunables, t: TaskHandle): Promise<MigrationResult> {
    return this.d.locks.run(id, async () => {
      this.active.add(id);
      try {
        return await this.migrateLocked(id, to, tunables, t);
      } finally {
        this.active.delete(id);
      }
    });
  }

  private async chooseTarget(vm: VmRecord, to: string | undefined, t: TaskHandle): Promise<string> {
    if (to === this.d.hostName) throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs on ${to}`);
    const decision = placeIn(this.d.state, {
      vmId: vm.id,
      cpus: vm.cpus,
      memoryBytes: vm.memoryBytes,
      antiAffinity: vm.antiAffinity,
      exclude: [this.d.hostName],
      pinnedHost: to ?? null,
    });
    for (const r of decision.reasons) t.log(`placement: ${r}`);
    const target = this.d.state.hosts.view(decision.host);
    if (!target || target.state !== 'online')
      throw new FdError(
        'FD_HOST_UNAVAILABLE',
        `host ${decision.host} is ${target?.state ?? 'unknown'}; it cannot take VMs now`,
      );
    return target.name;
  }

  private async migrateLocked(
    id: string,
    to: string | undefined,
    tunables: MigrationTunables,
    t: TaskHandle,
  ): Promise<MigrationResult> {
    const t0 = Date.now();
    const { value: vm } = await this.d.state.vms.find(id);
    if (vm.host !== this.d.hostName) throw new FdError('FD_OWNER_MOVED', `VM ${vm.name} is owned by ${vm.host} now`);
    const st = await this.d.runtime.status(id);
    if (st.state !== 'running' && st.state !== 'paused')
      throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${st.state}; live migration moves running VMs`);
    const target = await this.chooseTarget(vm, to, t);
    t.log(`migrating ${vm.name} from ${this.d.hostName} to ${target}`);
    // What a daemon that dies mid-migration needs to finish or undo it (recovery.ts).
    const intent: MigrationIntent = {
      vmId: vm.id,
      from: this.d.hostName,
      to: target,
      phase: 'copying',
      at: new Date().toISOString(),
    };
    await this.d.state.migrations.put(intent);
    const prepared = await this.d.peers.call(target, migrationPrepare, {
      id: vm.id,
      source: this.d.hostName,
      disks: this.d.disks.plans(vm),
      // Capabilities that must match on both ends.
      multifd: tunables.multifd,
      postcopy: tunables.postcopy,
    });
    const ctl = this.d.runtime.control(id);
    const diskIds = prepared.disks.map((dk) => dk.id);
    let moved: MovedState;
    let tPaused = 0;
    try {
      moved = await migrateFromSource({ ctl, target: prepared, tunables, task: t, log: this.d.log });
      tPaused = Date.now();
      await this.d.state.migrations.put({ ...intent, phase: 'finishing' });
    } catch (err) {
      // The target never ran the guest: resume here, and have the target remove its side.
      t.log(`migration failed, the VM stays on ${this.d.hostName}: ${(err as Error).message}`);
      // Released already when the copy failed; not when the memory moved and the intent did not.
      await releaseSourceMirrors(ctl, diskIds, prepared.nbd, this.d.log).catch((e: unknown) =>
        this.d.log.warn('releasing mirrors after a failed migration', { err: String(e) }),
      );
      await ctl.run
        .resumeIfPaused()
        .catch((e: unknown) =>
          this.d.log.error('could not resume the source after a failed migration', { err: String(e) }),
        );
      await this.abortTarget(vm.id, intent, t);
      throw err;
    }
    // The guest is paused here and in sync there: the target runs it first, and only then
    // are the source's (idle) mirror jobs released; the pause is QEMU's downtime plus one call.
    const tFinish = Date.now();
    const finished = await this.d.peers
      .call(target, migrationFinish, { id: vm.id }, { timeoutMs: FINISH_CALL_MS })
      .catch((err: unknown) => {
        t.log(`finish on ${target} failed: ${(err as Error).message}; asking ${target} what it runs`);
        return undefined;
      });
    if (finished)
      t.log(
        `switch-over: intent ${tFinish - tPaused} ms, finish on ${target} ${Date.now() - tFinish} ms (of which ${finished.loadWaitMs} ms waiting for its QEMU to load the last state)`,
      );
    const targetDisks = finished ? prepared.diskPaths : await this.resolveFinishing(vm, intent, t);
    if (!targetDisks)
      throw new FdError('FD_MIGRATION_FAILED', `finishing on ${target} failed; the VM runs on ${this.d.hostName}`, {
        hint: 'the VM keeps running on its host; check the target host and try again',
      });
    await releaseSourceMirrors(ctl, diskIds).catch((err: unknown) =>
      this.d.log.warn('releasing the mirrors of a migrated source', { err: String(err) }),
    );
    // QEMU sometimes reports 'completed' before it has computed the downtime: ask again now
    // that the guest runs (not while it was paused).
    if (!moved.downtimeMs) {
      const q = await ctl.migration.query().catch(() => undefined);
      moved = { ...moved, downtimeMs: q?.downtimeMs ?? 0 };
    }
    // The guest runs on the target now: move ownership, then retire the source side.
    await this.completeMove(vm.id, target, targetDisks);
    const result: MigrationResult = { from: this.d.hostName, to: target, totalTimeMs: Date.now() - t0, ...moved };
    t.log(
      `done: downtime ${result.downtimeMs} ms, total ${result.totalTimeMs} ms, ${result.ramBytes} bytes of memory, ${result.diskBytes} bytes of disk`,
    );
    return result;
  }

  /**
   * After a failed copy: the target removes its side. A target out of reach (a cut link) is
   * retried in the background, with the intent kept as 'aborting' so a restarted daemon
   * retries too; the source runs the guest meanwhile, the target never did.
   */
  async abortTarget(vmId: string, intent: MigrationIntent, t?: TaskHandle): Promise<void> {
    if (await this.tryAbort(vmId, intent.to)) {
      await this.d.state.migrations.remove(vmId);
      return;
    }
    t?.log(`${intent.to} is out of reach; it will remove its side when it can be reached again`);
    const aborting: MigrationIntent = { ...intent, phase: 'aborting', at: new Date().toISOString() };
    await this.d.state.migrations.put(aborting);
    void this.retryAbort(vmId, aborting);
  }

  /** Whether the target removed its side (a host gone from the cluster runs nothing of ours). */
  private async tryAbort(vmId: string, to: string): Promise<boolean> {
    if (!this.d.state.hosts.record(to)) return true;
    return this.d.peers.call(to, migrationAbort, { id: vmId }, { timeoutMs: ABORT_CALL_MS }).then(
      () => true,
      (err: unknown) => {
        this.d.log.warn('target cleanup after a failed migration failed; retrying', { to, err: String(err) });
        return false;
      },
    );
  }

  /** Calls the target's abort every few seconds until it answers, the intent changes or we close. */
  private async retryAbort(vmId: string, intent: MigrationIntent): Promise<void> {
    while (!this.d.closed()) {
      await sleep(ABORT_RETRY_MS);
      const cur = await this.d.state.migrations.get(vmId).catch(() => undefined);
      if (!cur || cur.at !== intent.at || cur.phase !== 'aborting') return;
      if (await this.tryAbort(vmId, intent.to)) {
        this.d.log.info('the target of a failed migration removed its side', { vm: vmId, to: intent.to });
        await this.d.state.migrations.remove(vmId);
        return;
      }
    }
  }

  /**
   * The finish call failed (or its caller died): the target may or may not run the guest. The
   * target is asked to abort until it answers; its abort waits for a finish in progress (one
   * lock per VM) and refuses once the guest ran there. Refused: the move completes (the
   * target's disk paths are returned). Aborted: the source resumes (null). The source stays
   * paused while the target does not answer: resuming it could make two running copies.
   */
  async resolveFinishing(
    vm: VmRecord,
    intent: MigrationIntent,
    t?: TaskHandle,
  ): Promise<Record<string, string> | null> {
    for (let i = 0; ; i++) {
      const gone = !this.d.state.hosts.record(intent.to);
      const answer = gone
        ? ('aborted' as const)
        : await this.d.peers.call(intent.to, migrationAbort, { id: vm.id }, { timeoutMs: ABORT_CALL_MS }).then(
            () => 'aborted' as const,
            (err: unknown) => (isFdError(err, 'FD_MIGRATION_TARGET_RAN') ? ('ran' as const) : ('silent' as const)),
          );
      if (answer === 'ran') {
        const st = await this.d.peers
          .call(intent.to, migrationState, { id: vm.id }, { timeoutMs: ABORT_CALL_MS })
          .catch(() => undefined);
        if (st) return st.diskPaths;
      } else if (answer === 'aborted') {
        const ctl = this.d.runtime.control(vm.id);
        await releaseSourceMirrors(
          ctl,
          vm.disks.map((dk) => dk.id),
        ).catch((err: unknown) => this.d.log.warn('releasing mirrors of an undone migration', { err: String(err) }));
        await ctl.run.resume();
        await this.d.state.migrations.remove(vm.id);
        return null;
      }
      if (i % 10 === 0) {
        const msg = `${intent.to} does not answer; the VM stays paused here until it does`;
        t?.log(msg);
        this.d.log.warn(msg, { vm: vm.name });
      }
      if (this.d.closed())
        throw new FdError('FD_MIGRATION_FAILED', 'daemon stopping; the next start resolves the move');
      await sleep(ABORT_RETRY_MS);
    }
  }

  /** Ownership to `target` (with its disk paths), then the source side's processes and files go. */
  async completeMove(vmId: string, target: string, diskPaths: Record<string, string>): Promise<void> {
    for (;;) {
      const vm = await this.d.state.vms.fresh(vmId);
      if (!vm) throw new FdError('FD_VM_NOT_FOUND', `VM ${vmId} vanished while it moved to ${target}`);
      if (vm.value.host === target) break;
      if (await this.d.state.vms.moveOwner({ vm, to: target, diskPaths })) break;
    }
    await this.d.state.migrations.remove(vmId);
    this.d.movedAway(vmId);
    await forceOff(this.d.runtime, vmId).catch((err: unknown) =>
      this.d.log.warn('stopping the migrated source', { err: String(err) }),
    );
    await this.d.runtime.cleanup(vmId);
    await this.d.disks.removeVmDir(vmId);
  }
}
