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
import type { HostRecord, ProtectionRecord, VmRecord, VmStatus } from '../state/model.js';
import { callPeer } from '../peer/client.js';
import type { Store } from '../state/store.js';

/** Beyond the lease TTL: clock-rate differences and the keeper's own kill time. */
export const FENCE_MARGIN_MS = 500;
const TICK_MS = 200;

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

  constructor(private readonly o: { store: Store; hostName: string; peerToken: string; log: Logger }) {}

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
    const { store } = this.o;
    const hosts = (await store.list<HostRecord>('hosts/')).map((h) => h.value);
    const alive = new Set((await store.list<{ name: string }>('alive/')).map((a) => a.value.name));
    const now = Date.now();
    for (const h of hosts) {
      if (alive.has(h.name)) {
        this.lostSince.delete(h.name);
      } else if (!this.lostSince.has(h.name)) {
        this.lostSince.set(h.name, now);
        this.o.log.warn('host lost', { host: h.name });
      }
    }
    const due = [...this.lostSince].filter(([, t]) => now - t >= FENCE_MARGIN_MS).map(([h]) => h);
    if (!due.length) return;
    const vms = (await store.list<VmRecord>('vms/')).map((v) => v.value);
    const prot = new Map((await store.list<ProtectionRecord>('protection/')).map((p) => [p.value.vmId, p.value]));
    const todo = vms
      .filter((v) => due.includes(v.host) && v.desired === 'running' && (v.ha?.enabled || prot.has(v.id)))
      .sort((a, b) => (b.ha?.priority ?? 0) - (a.ha?.priority ?? 0));
    for (const vm of todo) await this.recover(vm, prot.get(vm.id), alive, hosts);
  }

  private async recover(
    vm: VmRecord,
    prot: ProtectionRecord | undefined,
    alive: Set<string>,
    hosts: HostRecord[],
  ): Promise<void> {
    const key = `${vm.id}@${vm.host}`;
    const last = this.attempted.get(key) ?? 0;
    if (Date.now() - last < 2000) return;
    this.attempted.set(key, Date.now());
    const lostAt = new Date(this.lostSince.get(vm.host) ?? Date.now()).toISOString();
    if (!prot || prot.state !== 'protected' || !prot.standby || !alive.has(prot.standby)) {
      const why = !prot
        ? 'its disks are only on the lost host (protect it with `vm protect` to fail it over)'
        : prot.state !== 'protected'
          ? `its standby copy was ${prot.state} when the host was lost; starting it would lose writes`
          : `its standby ${prot.standby ?? '?'} is not available`;
      await this.report(vm, `host ${vm.host} is lost; ${vm.name} cannot restart elsewhere: ${why}`);
      return;
    }
    const target = hosts.find((h) => h.name === prot.standby);
    if (!target) return;
    this.o.log.warn('failing over', { vm: vm.name, from: vm.host, to: prot.standby });
    try {
      await callPeer(target, this.o.peerToken, 'POST', `/api/v1/vms/${vm.id}/protection/takeover`, {
        id: vm.id,
        from: vm.host,
      });
      this.o.log.warn('failed over', { vm: vm.name, from: vm.host, to: prot.standby, lostAt });
    } catch (err) {
      this.o.log.error('failover did not happen', { vm: vm.name, err: String(err) });
      await this.report(vm, `failover to ${prot.standby} failed: ${(err as Error).message}`);
    }
  }

  /** The lost host cannot speak for its VMs: the leader notes why one stays down. */
  private async report(vm: VmRecord, msg: string): Promise<void> {
    const cur = (await this.o.store.get<VmStatus>(`status/vms/${vm.id}`))?.value;
    if (cur?.lastError === msg) return;
    this.o.log.warn('VM stays down', { vm: vm.name, msg });
    await this.o.store.put<VmStatus>(`status/vms/${vm.id}`, {
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
