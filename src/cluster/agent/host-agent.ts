/**
 * The agent of one host: it builds this host's parts and runs them. It publishes the host's
 * record, starts the fence keeper, takes over VMs that kept running while the daemon was away,
 * recovers interrupted migrations, and keeps reconciling. The work itself lives in the parts:
 * power.ts (power actions), reconcile.ts, fencing.ts, status.ts, ../migration (source and
 * target), ../protection (mirroring and failover), ../provisioning (files and records).
 */
import { cpus, freemem, totalmem } from 'node:os';
import { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { localFirst } from '../clustering/endpoints.js';
import { MigrationSource } from '../migration/source.js';
import { MigrationTarget } from '../migration/target.js';
import { recoverMigrations } from '../migration/recovery.js';
import type { Peers } from '../peer/client.js';
import { Protection } from '../protection/protection.js';
import type { Provisioner } from '../provisioning/provisioner.js';
import type { Runtime, VmStats } from '../runtime/runtime.js';
import type { HostRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import { readGuarded } from './fence/files.js';
import { ensureKeeper, stopKeeper } from './fence/keeper-process.js';
import { Fencing } from './fencing.js';
import { Power } from './power.js';
import { Reconciler } from './reconcile.js';
import { StatusPublisher } from './status.js';

/**
 * Liveness lease TTL, held by the fence keeper; it fences this host's guarded VMs after
 * FENCE_AFTER_MS without a renewal. 1 s between the two covers the keeper's kill; 3 s without
 * a renewal keeps an etcd leader election or a loaded machine (seen: 2 s stalls at load 16 in
 * the lab) from fencing healthy hosts.
 */
export const ALIVE_TTL_S = 4;
const FENCE_AFTER_MS = 3000;
const GUARD_TICK_MS = 500;
/** Cluster networks follow hosts and VMs; changes are gathered this long before a refresh. */
const NET_REFRESH_DELAY_MS = 300;

export interface HostAgentOptions {
  state: State;
  runtime: Runtime;
  provisioner: Provisioner;
  peers: Peers;
  hostName: string;
  apiUrl: string;
  accel: string;
  version: string;
  certPem?: string;
  log: Logger;
  dataDir: string;
  /** etcd endpoints for the fence keeper (the same the daemon uses). */
  etcdEndpoints: string[];
}

export class HostAgent {
  readonly locks = new KeyedLock();
  readonly status: StatusPublisher;
  readonly power: Power;
  readonly protection: Protection;
  readonly migration: { source: MigrationSource; target: MigrationTarget };
  private readonly fencing: Fencing;
  private readonly reconciler: Reconciler;
  private guardTimer: NodeJS.Timeout | undefined;
  private netTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: (() => void)[] = [];
  private closed = false;

  constructor(private readonly o: HostAgentOptions) {
    const { state, runtime, peers, hostName, log } = o;
    const disks = o.provisioner.disks;
    const locks = this.locks;
    const listenAddress = (): string => new URL(this.o.apiUrl).hostname.replace(/^\[|\]$/g, '');
    const closed = (): boolean => this.closed;
    this.status = new StatusPublisher({ hostName, state });
    const movedAway = (id: string): void => this.status.forget(id);
    this.protection = new Protection({
      hostName,
      listenAddress,
      dataDir: o.dataDir,
      state,
      runtime,
      disks,
      peers,
      locks,
      log: log.child({ part: 'protection' }),
      adopted: (id) => this.adopt(id),
      movedAway,
    });
    this.power = new Power({
      hostName,
      state,
      runtime,
      provisioner: o.provisioner,
      protection: this.protection,
      status: this.status,
      locks,
      log,
    });
    this.fencing = new Fencing({
      hostName,
      dataDir: o.dataDir,
      state,
      runtime,
      locks,
      log,
      ttlMs: ALIVE_TTL_S * 1000,
      start: (vm) => this.power.launch(vm),
    });
    this.reconciler = new Reconciler({
      hostName,
      state,
      runtime,
      power: this.power,
      status: this.status,
      locks,
      log,
      held: (id) => this.fencing.hold(id),
      closed,
    });
    const source = new MigrationSource({ hostName, state, runtime, disks, peers, locks, log, closed, movedAway });
    const target = new MigrationTarget({ hostName, listenAddress, state, runtime, disks, locks, log });
    this.migration = { source, target };
  }

  /** The API URL is known only once the server listens (port 0 picks one). */
  setApiUrl(url: string): void {
    this.o.apiUrl = url;
  }

  get hostName(): string {
    return this.o.hostName;
  }

  private hostRecord(): HostRecord {
    return {
      name: this.o.hostName,
      apiUrl: this.o.apiUrl,
      state: 'online',
      cpus: cpus().length,
      memoryBytes: totalmem(),
      freeMemoryBytes: freemem(),
      accel: this.o.accel,
      version: this.o.version,
      startedAt: new Date().toISOString(),
      ...(this.o.certPem ? { certPem: this.o.certPem } : {}),
    };
  }

  async init(): Promise<void> {
    const { state, runtime, hostName, log } = this.o;
    await state.hosts.publish(this.hostRecord());
    // Guarded VMs are listed before the keeper runs: it must know what to fence from the start.
    await this.fencing.syncGuarded();
    await ensureKeeper({
      endpoints: localFirst(this.o.etcdEndpoints, this.o.apiUrl),
      hostName,
      dataDir: this.o.dataDir,
      ttlS: ALIVE_TTL_S,
      fenceAfterMs: FENCE_AFTER_MS,
    });
    await this.fencing.init();
    runtime.setRestartGate((id) => this.fencing.mayRestart(id));
    await this.o.provisioner.init();
    runtime.onChange(
      (id, st) =>
        void this.reconciler.onRuntimeChange(id, st).catch((err: unknown) =>
          // etcd may be out of reach (a partition); the next reconcile publishes again.
          log.warn('cannot publish a VM state change', { vm: id, err: String(err) }),
        ),
    );
    const mine = state.vms.ownedBy(hostName);
    const found = await runtime.reattach(mine.map((v) => v.id));
    for (const vm of mine)
      await this.status.publish(vm.id, found.get(vm.id) ?? { state: 'stopped', pid: null, lastError: null });
    await this.reconciler
      .sweepForeign(new Set(mine.map((v) => v.id)))
      .catch((err: unknown) => log.warn('sweeping leftovers of VMs owned elsewhere failed', { err: String(err) }));
    await recoverMigrations({
      hostName,
      state,
      runtime,
      locks: this.locks,
      log,
      source: this.migration.source,
    }).catch((err: unknown) => log.error('migration recovery failed', { err: String(err) }));
    for (const vm of mine) this.reconciler.queue(vm.id, { boot: true });
    this.protection.start();
    this.guardTimer = setInterval(() => {
      if (!this.closed) void this.fencing.guard();
    }, GUARD_TICK_MS);
    this.guardTimer.unref();
    this.unsubscribe.push(
      state.onChange('hosts', () => this.refreshNetworksSoon()),
      state.onChange('networks', () => this.refreshNetworksSoon()),
      state.onChange('vms', (e) => {
        this.refreshNetworksSoon();
        // Queued behind whatever holds the VM's lock (not skipped: a VM handed to this host
        // while its lock was held must still get its state published), at most once.
        if (e.type === 'put' && (e.value as VmRecord).host === hostName)
          this.reconciler.queue((e.value as VmRecord).id);
      }),
    );
  }

  private refreshNetworksSoon(): void {
    if (this.netTimer || this.closed) return;
    this.netTimer = setTimeout(() => {
      this.netTimer = undefined;
      void this.o.provisioner.networks
        .refreshCluster()
        .catch((err: unknown) => this.o.log.warn('cluster network refresh failed', { err: String(err) }));
    }, NET_REFRESH_DELAY_MS);
  }

  /** A VM this host now owns (failover): guarded before it starts, then started. */
  private async adopt(id: string): Promise<void> {
    await this.fencing.syncGuarded([id]);
    const { value: vm } = await this.o.state.vms.find(id);
    await this.power.launch(vm);
  }

  /** Load of the VMs that run here (metrics and the web UI's graphs). */
  stats(): Promise<VmStats[]> {
    const running = this.o.state.vms
      .ownedBy(this.o.hostName)
      .filter((v) => {
        const st = this.o.state.vms.status(v.id)?.state;
        return st === 'running' || st === 'paused';
      })
      .map((v) => ({ id: v.id, name: v.name }));
    return this.o.runtime.stats(running);
  }

  /** Maintenance: no new VMs are placed here; running VMs are migrated away by evacuate. */
  setHostState(state: 'online' | 'maintenance'): Promise<HostRecord> {
    return this.o.state.hosts.setState(this.o.hostName, state);
  }

  /** Runs `fn` holding the locks of these VMs, so no power action runs while their disks are read. */
  exclusive<T>(ids: string[], fn: () => Promise<T>): Promise<T> {
    return this.locks.runAll(ids, fn);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const off of this.unsubscribe) off();
    if (this.netTimer) clearTimeout(this.netTimer);
    this.protection.close();
    if (this.guardTimer) clearInterval(this.guardTimer);
    await this.locks.settled();
    // The keeper outlives the daemon while guarded VMs run here: their liveness must not
    // depend on the daemon. Otherwise it goes, and the host shows lost.
    const guarded = await readGuarded(this.o.dataDir).catch(() => [] as string[]);
    const running = await Promise.all(guarded.map((id) => this.o.runtime.status(id).catch(() => undefined)));
    if (!running.some((st) => st?.state === 'running' || st?.state === 'paused'))
      await stopKeeper(this.o.dataDir).catch((err: unknown) =>
        this.o.log.warn('stopping the keeper', { err: String(err) }),
      );
    await this.o.runtime.close();
  }
}
