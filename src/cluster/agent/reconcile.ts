/**
 * Brings this host's VMs to their desired state: after a daemon start (reattach, then each VM
 * it owns), whenever a VM's record changes, and when the runtime reports a change on its own
 * (a crash, a guest that powered itself off). Which action to take is `reconcileAction`, a
 * pure function of the record and what runs; carrying it out is `Reconciler`.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { forceOff, type Runtime, type RuntimeStatus } from '../runtime/runtime.js';
import type { VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { Power } from './power.js';
import type { StatusPublisher } from './status.js';

export type ReconcileAction = 'start' | 'stop' | 'report' | 'keep';

/**
 * start: should run and simply is not there (host reboot, daemon killed mid-start), or an HA or
 * protected VM whose host went down with it and came back (`boot`: the daemon's first pass).
 * report: should run but crashed, is starting or unknown (a crash is the runner's to handle by
 * its restart policy). stop: should be stopped and runs. keep: as it should be.
 */
export function reconcileAction(
  desired: VmRecord['desired'],
  st: RuntimeStatus['state'],
  o: { boot: boolean; guarded: boolean },
): ReconcileAction {
  const running = st === 'running' || st === 'paused';
  if (desired === 'running' && !running) {
    const hostCameBack = o.boot && o.guarded && st === 'crashed';
    if (!hostCameBack && (st === 'crashed' || st === 'starting' || st === 'unknown')) return 'report';
    return 'start';
  }
  if (desired === 'stopped' && running) return 'stop';
  return 'keep';
}

export interface ReconcileDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  power: Power;
  status: StatusPublisher;
  locks: KeyedLock;
  log: Logger;
  /** The fence's guard takes over a restart the runner's gate held. */
  held: (id: string) => void;
  closed: () => boolean;
}

export class Reconciler {
  private readonly queued = new Set<string>();

  constructor(private readonly d: ReconcileDeps) {}

  /** Reconciles the VM once whatever holds its lock is done; queued at most once. */
  queue(id: string, opts: { boot?: boolean } = {}): void {
    if (this.queued.has(id)) return;
    this.queued.add(id);
    void this.d.locks
      .run(id, () => {
        this.queued.delete(id);
        return this.reconcile(id, opts);
      })
      .catch((err: unknown) => this.d.log.error('reconcile failed', { vm: id, err: String(err) }));
  }

  async reconcile(id: string, opts: { boot?: boolean } = {}): Promise<void> {
    const vm = this.d.state.vms.cached(id)?.value;
    if (!vm || vm.host !== this.d.hostName || this.d.closed()) return;
    const st = await this.d.runtime.status(id);
    const guarded = vm.ha?.enabled === true || this.d.state.protection.isProtected(id);
    switch (reconcileAction(vm.desired, st.state, { boot: opts.boot === true, guarded })) {
      case 'start':
        this.d.log.info('reconcile: starting VM that should run', { vm: vm.name, was: st.state });
        await this.d.power.launch(vm);
        return;
      case 'stop':
        this.d.log.info('reconcile: stopping VM that should be stopped', { vm: vm.name });
        await forceOff(this.d.runtime, id);
        await this.d.status.publish(id, await this.d.runtime.status(id));
        return;
      case 'keep':
        if (st.state === 'running' || st.state === 'paused') await this.d.runtime.applyRestartPolicy(vm);
        await this.d.status.publish(id, st);
        return;
      case 'report':
        await this.d.status.publish(id, st);
    }
  }

  /**
   * The runner restarts by policy on its own; here the store learns what happened, and a guest
   * that powered itself off (with a policy that does not restart it) becomes desired-stopped:
   * that is what its owner wants now.
   */
  async onRuntimeChange(id: string, st: RuntimeStatus): Promise<void> {
    if (this.d.closed()) return;
    if (st.restartHeld) this.d.held(id);
    await this.d.status.publish(id, st);
    if (!st.guestShutdown) return;
    const vm = this.d.state.vms.cached(id)?.value;
    if (vm && vm.desired === 'running' && vm.restartPolicy !== 'always')
      await this.d.state.vms.update(id, (cur) => ({ ...cur, desired: 'stopped' }));
  }

  /**
   * Run dirs of VMs this host does not own and does not run (they failed over or migrated
   * while this host was down) go: nothing of them may start here again, and their logs would
   * be mistaken for the VM's current ones.
   */
  async sweepForeign(mine: Set<string>): Promise<void> {
    const moving = this.d.state.migrations.moving();
    for (const id of await this.d.runtime.localIds()) {
      if (mine.has(id) || moving.has(id)) continue;
      const st = await this.d.runtime.status(id);
      if (st.state === 'running' || st.state === 'paused' || st.state === 'starting') {
        // A copy of a VM another host owns (a source whose daemon died after handing the VM
        // over): it must not run on.
        this.d.log.warn('stopping a copy of a VM owned by another host', { vm: id });
        await this.d.runtime.stop(id, { graceful: false, timeoutMs: 0 });
      }
      this.d.log.info('removing the leftovers of a VM owned elsewhere', { vm: id });
      await this.d.runtime.cleanup(id);
    }
  }
}
