/**
 * The leader's failover controller: brings the guarded VMs of a lost host back on other hosts.
 *
 * A host is lost when its liveness key (`alive/NAME`, held by its fence keeper) is gone: etcd
 * dropped it a full lease TTL after the last renewal, and the keeper of that host killed its
 * guarded VMs before that (keeper-main.ts). The controller waits a further FENCE_MARGIN_MS,
 * then, highest HA priority first, asks each protected VM's standby to take it over: the
 * standby fences its copy and takes ownership in a transaction that holds only while the lost
 * host is still without a lease. A VM whose copy is not in sync (`syncing`, `degraded`) or
 * whose disks only the lost host has is not started anywhere: that would lose writes or run a
 * second copy; it is reported in the VM's status and waits for its host.
 */
import type { Logger } from '../../core/log.js';
import type { Peers } from '../peer/client.js';
import { protectionTakeover } from '../peer/contracts.js';
import type { ProtectionRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';

/** Beyond the lease TTL: clock-rate differences and the keeper's own kill time. */
export const FENCE_MARGIN_MS = 500;
const TICK_MS = 200;
/** A failover that did not happen is tried again after this long. */
const RETRY_MS = 2000;

/** The lost host's VMs to bring back: running, HA or protected, highest priority first. */
export function failoverOrder(vms: VmRecord[], isProtected: (id: string) => boolean): VmRecord[] {
  return vms
    .filter((v) => v.desired === 'running' && (v.ha?.enabled || isProtected(v.id)))
    .sort((a, b) => (b.ha?.priority ?? 0) - (a.ha?.priority ?? 0));
}

/**
 * Why a lost host's VM cannot start on another host without losing a write or making a second
 * copy; undefined when its standby can take it over.
 */
export function cannotFailOver(prot: ProtectionRecord | undefined, alive: Set<string>): string | undefined {
  if (!prot) return 'its disks are only on the lost host (protect it with `vm protect` to fail it over)';
  if (prot.state !== 'protected')
    return `its standby copy was ${prot.state} when the host was lost; starting it would lose writes`;
  if (!prot.standby || !alive.has(prot.standby)) return `its standby ${prot.standby ?? '?'} is not available`;
  return undefined;
}

export interface FailoverEvent {
  vm: string;
  from: string;
  to: string | null;
  lostAt: string;
  startedAt: string | null;
  error: string | null;
}

export class FailoverController {
  private timer: NodeJS.Timeout | undefined;
  private readonly lostSince = new Map<string, number>();
  private running = false;
  private readonly attempted = new Map<string, number>();

  constructor(private readonly o: { state: State; peers: Peers; log: Logger }) {}

  start(): void {
    if (this.timer) return;
    this.o.log.info('failover controller running (this host leads)');
    this.timer = setInterval(() => void this.tick(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.lostSince.clear();
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      await this.step();
    } catch (err) {
      this.o.log.warn('failover step failed', { err: String(err) });
    } finally {
      this.running = false;
    }
  }

  private async step(): Promise<void> {
    const { state } = this.o;
    const now = Date.now();
    for (const h of state.hosts.list()) {
      if (h.state !== 'lost') {
        this.lostSince.delete(h.name);
      } else if (!this.lostSince.has(h.name)) {
        this.lostSince.set(h.name, now);
        this.o.log.warn('host lost', { host: h.name });
      }
    }
    const due = [...this.lostSince].filter(([, t]) => now - t >= FENCE_MARGIN_MS).map(([h]) => h);
    if (!due.length) return;
    const todo = failoverOrder(
      state.vms.records().filter((v) => due.includes(v.host)),
      (id) => state.protection.isProtected(id),
    );
    for (const vm of todo) await this.recover(vm, state.protection.get(vm.id));
  }

  private async recover(vm: VmRecord, prot: ProtectionRecord | undefined): Promise<void> {
    const key = `${vm.id}@${vm.host}`;
    const last = this.attempted.get(key) ?? 0;
    if (Date.now() - last < RETRY_MS) return;
    this.attempted.set(key, Date.now());
    const lostAt = new Date(this.lostSince.get(vm.host) ?? Date.now()).toISOString();
    const why = cannotFailOver(prot, this.o.state.hosts.alive());
    if (why) {
      await this.report(vm, `host ${vm.host} is lost; ${vm.name} cannot restart elsewhere: ${why}`);
      return;
    }
    const standby = prot!.standby!;
    this.o.log.warn('failing over', { vm: vm.name, from: vm.host, to: standby });
    try {
      await this.o.peers.call(standby, protectionTakeover, { id: vm.id, from: vm.host });
      this.o.log.warn('failed over', { vm: vm.name, from: vm.host, to: standby, lostAt });
    } catch (err) {
      this.o.log.error('failover did not happen', { vm: vm.name, err: String(err) });
      await this.report(vm, `failover to ${standby} failed: ${(err as Error).message}`);
    }
  }

  /** The lost host cannot speak for its VMs: the leader notes why one stays down. */
  private async report(vm: VmRecord, msg: string): Promise<void> {
    const cur = this.o.state.vms.status(vm.id);
    if (cur?.lastError === msg) return;
    this.o.log.warn('VM stays down', { vm: vm.name, msg });
    await this.o.state.vms.reportStatus({
      id: vm.id,
      host: vm.host,
      state: 'unknown',
      pid: null,
      since: new Date().toISOString(),
      lastError: msg,
      restarts: cur?.restarts ?? 0,
    });
  }
}
