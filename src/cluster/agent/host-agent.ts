/**
 * The agent of one host: it runs the VMs the store says this host owns. It publishes the
 * host's record and liveness, reattaches to VMs that kept running while the daemon was away,
 * reconciles desired against actual state, applies restart policies, and executes the power
 * actions that tasks ask for. Every action on a VM runs under that VM's lock, so parallel API
 * calls on one VM are applied one after another and end in a consistent state.
 */
import { cpus, freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import { FdError, isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { TaskHandle } from '../state/tasks.js';
import type { Store } from '../state/store.js';
import type { Runtime, RuntimeStatus, VmStats } from '../runtime/runtime.js';
import type { DiskRecord, HostRecord, VmRecord, VmStatus } from '../state/model.js';
import type { VmService } from '../state/vms.js';
import type { Provisioner } from '../provisioning/provisioner.js';
import type { VmCreateSpec } from '../provisioning/provisioner.js';
import { place, type PlacedVm, type PlacementHost } from '../clustering/placement.js';
import { callPeer } from '../peer/client.js';
import {
  migrateFromSource,
  mirrorNode,
  releaseSourceMirrors,
  type MigrationResult,
  type MigrationTunables,
  type PreparedTarget,
} from '../migration/transfer.js';
import { qemuIds } from '../../qemu/argv.js';
import { sleep } from '../../core/process.js';
import { freePort } from '../../core/ports.js';
import { Protection } from '../protection/protection.js';
import { localFirst } from '../clustering/endpoints.js';
import { ensureKeeper, readKeeperState, stopKeeper } from './fence/keeper-process.js';
import { readGuarded, writeGuarded } from './fence/files.js';
import type { ProtectionRecord } from '../state/model.js';

/**
 * Liveness lease TTL, held by the fence keeper; it fences this host's guarded VMs after
 * FENCE_AFTER_MS without a renewal. 1 s between the two covers the keeper's kill; 3 s without
 * a renewal keeps an etcd leader election or a loaded machine (seen: 2 s stalls at load 16 in
 * the lab) from fencing healthy hosts.
 */
const ALIVE_TTL_S = 4;
const FENCE_AFTER_MS = 3000;
const GUARD_TICK_MS = 500;
/** Calls to a migration target after a failure: short, a cut link must not hold the task. */
const ABORT_CALL_MS = 10_000;
const ABORT_RETRY_MS = 3_000;
const FINISH_CALL_MS = 30_000;

export interface HostAgentOptions {
  store: Store;
  vms: VmService;
  runtime: Runtime;
  provisioner: Provisioner;
  hostName: string;
  apiUrl: string;
  accel: string;
  version: string;
  certPem?: string;
  /** This daemon's API token, for calls to other hosts (migration). */
  peerToken: string;
  log: Logger;
  dataDir: string;
  /** etcd endpoints for the fence keeper (the same the daemon uses). */
  etcdEndpoints: string[];
}

export class HostAgent {
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly activeMigrations = new Set<string>();
  private readonly statuses = new Map<string, VmStatus>();
  /** Mirroring of this host's protected VMs, and the standby copies it serves for others. */
  readonly protection: Protection;
  private guardTimer: NodeJS.Timeout | undefined;
  private guarding = false;
  /** VMs the fence keeper killed that this host may restart once it holds its lease again. */
  private readonly fencedPending = new Set<string>();
  private readonly reconcileQueued = new Set<string>();
  private lastFencedAt: string | null = null;
  private stopWatch: (() => Promise<void>) | undefined;
  private stopHostWatch: (() => Promise<void>) | undefined;
  private stopNetWatch: (() => Promise<void>) | undefined;
  private closed = false;

  constructor(private o: HostAgentOptions) {
    this.protection = new Protection({
      store: o.store,
      runtime: o.runtime,
      provisioner: o.provisioner,
      hostName: o.hostName,
      dataDir: o.dataDir,
      apiUrl: () => this.o.apiUrl,
      peerToken: o.peerToken,
      log: o.log.child({ part: 'protection' }),
      withLock: (id, fn) => this.withLock(id, fn),
      placementHosts: () => this.placementHosts(),
      placedVms: () => this.placedVms(),
      adopted: (id) => this.adopt(id),
    });
  }

  /** The API URL is known only once the server listens (port 0 picks one). */
  setApiUrl(url: string): void {
    this.o.apiUrl = url;
  }

  get hostName(): string {
    return this.o.hostName;
  }

  async init(): Promise<void> {
    const { store, hostName } = this.o;
    const rec: HostRecord = {
      name: hostName,
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
    const prev = await store.get<HostRecord>(`hosts/${hostName}`);
    await store.put(`hosts/${hostName}`, {
      ...rec,
      state: prev?.value.state === 'maintenance' ? 'maintenance' : 'online',
    });
    // Guarded VMs are listed before the keeper runs: it must know what to fence from the start.
    await this.syncGuarded();
    await ensureKeeper({
      endpoints: localFirst(this.o.etcdEndpoints, this.o.apiUrl),
      hostName,
      dataDir: this.o.dataDir,
      ttlS: ALIVE_TTL_S,
      fenceAfterMs: FENCE_AFTER_MS,
    });
    this.lastFencedAt = (await readKeeperState(this.o.dataDir))?.fencedAt ?? null;
    this.o.runtime.setRestartGate((id) => this.mayRestart(id));
    await this.o.provisioner.init();

    this.o.runtime.onChange(
      (id, st) =>
        void this.onRuntimeChange(id, st).catch((err: unknown) =>
          // etcd may be out of reach (a partition); the next reconcile publishes again.
          this.o.log.warn('cannot publish a VM state change', { vm: id, err: String(err) }),
        ),
    );
    const mine = (await store.list<VmRecord>('vms/')).filter((v) => v.value.host === hostName).map((v) => v.value);
    const found = await this.o.runtime.reattach(mine.map((v) => v.id));
    for (const vm of mine) {
      const st = found.get(vm.id) ?? { state: 'stopped' as const, pid: null, lastError: null };
      await this.publish(vm.id, st);
    }
    await this.sweepForeign(new Set(mine.map((v) => v.id))).catch((err: unknown) =>
      this.o.log.warn('sweeping leftovers of VMs owned elsewhere failed', { err: String(err) }),
    );
    await this.recoverMigrations().catch((err: unknown) =>
      this.o.log.error('migration recovery failed', { err: String(err) }),
    );
    for (const vm of mine)
      void this.withLock(vm.id, () => this.reconcile(vm.id, { boot: true })).catch((err: unknown) =>
        this.o.log.error('reconcile failed', { vm: vm.name, err: String(err) }),
      );
    // Cluster networks follow hosts and VMs (flood lists, DHCP bindings).
    let netTimer: NodeJS.Timeout | undefined;
    const refreshNets = (): void => {
      if (netTimer || this.closed) return;
      netTimer = setTimeout(() => {
        netTimer = undefined;
        void this.o.provisioner
          .refreshClusterNetworks()
          .catch((err: unknown) => this.o.log.warn('cluster network refresh failed', { err: String(err) }));
      }, 300);
    };
    this.protection.start();
    this.guardTimer = setInterval(() => void this.guard(), GUARD_TICK_MS);
    this.guardTimer.unref();
    this.stopHostWatch = await store.watch('hosts/', refreshNets);
    this.stopNetWatch = await store.watch('networks/', refreshNets);
    this.stopWatch = await store.watch<VmRecord>('vms/', (e) => {
      refreshNets();
      // Queued behind whatever holds the VM's lock (not skipped: a VM handed to this host
      // while its lock was held must still get its state published), at most once.
      if (e.type === 'put' && e.value.host === hostName && !this.reconcileQueued.has(e.value.id)) {
        const id = e.value.id;
        this.reconcileQueued.add(id);
        void this.withLock(id, () => {
          this.reconcileQueued.delete(id);
          return this.reconcile(id);
        }).catch(() => undefined);
      }
    });
  }

  // ---- fencing (see fence/keeper-main.ts) ----

  /** VMs this host must never run once it may have lost them: HA or protected, owned here. */
  private async guardedIds(): Promise<string[]> {
    const prot = new Set((await this.o.store.list<ProtectionRecord>('protection/')).map((p) => p.value.vmId));
    return (await this.o.store.list<VmRecord>('vms/'))
      .map((v) => v.value)
      .filter((v) => v.host === this.o.hostName && (v.ha?.enabled || prot.has(v.id)))
      .map((v) => v.id);
  }

  private async syncGuarded(extra: string[] = []): Promise<void> {
    const ids = [...(await this.guardedIds()), ...extra];
    const cur = await readGuarded(this.o.dataDir);
    if (JSON.stringify([...new Set(ids)].sort()) !== JSON.stringify(cur)) await writeGuarded(this.o.dataDir, ids);
  }

  /**
   * Whether the keeper holds its lease. The keeper writes leaseOk=false the moment it fences;
   * the age bound only catches a keeper that stopped writing altogether (dead or frozen), as
   * it saves a renewal at most once a second and may lag on a loaded machine.
   */
  private async leaseHeld(): Promise<boolean> {
    const st = await readKeeperState(this.o.dataDir);
    return !!st?.leaseOk && !!st.lastOkAt && Date.now() - Date.parse(st.lastOkAt) < ALIVE_TTL_S * 1000;
  }

  /**
   * Restart gate for the runner: a VM restarts here only while this host owns it (a VM that
   * failed over while this host was down must not come back here too), and a guarded one only
   * while the keeper's lease is fresh. Unknown (etcd out of reach) means no.
   */
  private async mayRestart(id: string): Promise<boolean> {
    const owner = await this.o.store.get<VmRecord>(`vms/${id}`).then(
      (r) => r?.value.host,
      () => undefined,
    );
    if (owner !== this.o.hostName) return false;
    if (!(await readGuarded(this.o.dataDir)).includes(id)) return true;
    return this.leaseHeld();
  }

  /**
   * Every GUARD_TICK_MS: keep the keeper's list current, and after a self-fence either restart
   * the fenced VMs (the lease came back before anyone took them: ownership is confirmed in a
   * transaction against this host's liveness key) or clean up after them (they run elsewhere).
   */
  private async guard(): Promise<void> {
    if (this.guarding || this.closed) return;
    this.guarding = true;
    try {
      await this.syncGuarded();
      const st = await readKeeperState(this.o.dataDir);
      if (st?.fencedAt && st.fencedAt !== this.lastFencedAt) {
        this.lastFencedAt = st.fencedAt;
        for (const id of st.fenced) this.fencedPending.add(id);
        this.o.log.warn('the fence keeper killed guarded VMs: this host lost its lease', { vms: st.fenced });
      }
      if (!this.fencedPending.size || !(await this.leaseHeld())) return;
      const alive = await this.o.store.get<unknown>(`alive/${this.o.hostName}`);
      for (const id of [...this.fencedPending]) {
        await this.withLock(id, async () => {
          const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
          const runtime = await this.o.runtime.status(id);
          if (runtime.state === 'running' || runtime.state === 'paused') return;
          if (!rec || rec.value.host !== this.o.hostName) {
            this.o.log.warn('a fenced VM runs elsewhere now; removing what is left of it here', {
              vm: id,
              owner: rec?.value.host,
            });
            await this.o.runtime.cleanup(id).catch(() => undefined);
            return;
          }
          if (rec.value.desired !== 'running' || !alive) return;
          const kept = await this.o.store.txn({
            expect: [
              { key: `vms/${id}`, rev: rec.rev },
              { key: `alive/${this.o.hostName}`, rev: alive.rev },
            ],
            put: [{ key: `vms/${id}`, value: { ...rec.value, updatedAt: new Date().toISOString() } }],
          });
          if (!kept) throw new Error('ownership changed while confirming it');
          this.o.log.warn('restarting a fenced VM: this host kept it', { vm: rec.value.name });
          await this.doStart(rec.value);
        }).then(
          () => this.fencedPending.delete(id),
          (err: unknown) => this.o.log.warn('after a fence', { vm: id, err: String(err) }),
        );
      }
    } catch (err) {
      this.o.log.warn('guard step failed', { err: String(err) });
    } finally {
      this.guarding = false;
    }
  }

  /**
   * Run dirs of VMs this host does not own and does not run (they failed over or migrated
   * while this host was down) go: nothing of them may start here again, and their logs would
   * be mistaken for the VM's current ones.
   */
  private async sweepForeign(mine: Set<string>): Promise<void> {
    const moving = new Set((await this.o.store.list<MigrationIntent>('migrations/')).map((m) => m.value.vmId));
    for (const id of await this.o.runtime.localIds()) {
      if (mine.has(id) || moving.has(id)) continue;
      const st = await this.o.runtime.status(id);
      if (st.state === 'running' || st.state === 'paused' || st.state === 'starting') {
        // A copy of a VM another host owns (a source whose daemon died after handing the VM
        // over): it must not run on.
        this.o.log.warn('stopping a copy of a VM owned by another host', { vm: id });
        await this.o.runtime.stop(id, { graceful: false, timeoutMs: 0 });
      }
      this.o.log.info('removing the leftovers of a VM owned elsewhere', { vm: id });
      await this.o.runtime.cleanup(id);
    }
  }

  /** A VM this host now owns (failover): guarded before it starts, then started. */
  private async adopt(id: string): Promise<void> {
    await this.syncGuarded([id]);
    const vm = (await this.o.vms.find(id)).value;
    await this.doStart(vm);
  }

  /** Serializes actions on one VM. */
  private withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.locks.set(id, next);
    void next
      .finally(() => {
        if (this.locks.get(id) === next) this.locks.delete(id);
      })
      .catch(() => undefined);
    return next;
  }

  private async publish(id: string, st: RuntimeStatus, restarts?: number): Promise<void> {
    // Only the owner speaks for a VM: a migration target (before the move) or a source (after
    // it) also runs processes for it, and must not overwrite the owner's word.
    const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
    if (rec && rec.value.host !== this.o.hostName) return;
    const prev = this.statuses.get(id);
    const status: VmStatus = {
      id,
      host: this.o.hostName,
      state: st.state,
      pid: st.pid,
      since: prev?.state === st.state ? prev.since : new Date().toISOString(),
      lastError: st.lastError ?? (st.state === 'running' ? null : (prev?.lastError ?? null)),
      restarts: restarts ?? prev?.restarts ?? 0,
    };
    this.statuses.set(id, status);
    await this.o.store.put(`status/vms/${id}`, status);
  }

  /** Brings a VM's actual state to its desired state (after a restart, or a record change). */
  private async reconcile(id: string, opts: { boot?: boolean } = {}): Promise<void> {
    const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
    if (!rec || rec.value.host !== this.o.hostName || this.closed) return;
    const vm = rec.value;
    const st = await this.o.runtime.status(id);
    const running = st.state === 'running' || st.state === 'paused';
    if (vm.desired === 'running' && !running) {
      // A crash is the runner's to handle by policy; reconcile only restores VMs that should
      // run and are simply not there (host reboot, daemon killed mid-start).
      // An HA VM whose host went down with it (killed, rebooted) starts again when the host
      // returns, unless it runs elsewhere now (then this host no longer owns it).
      const guarded =
        vm.ha?.enabled === true || (await this.o.store.get<ProtectionRecord>(`protection/${id}`)) !== undefined;
      const hostCameBack = opts.boot === true && guarded && st.state === 'crashed';
      if (!hostCameBack && (st.state === 'crashed' || st.state === 'starting' || st.state === 'unknown')) {
        await this.publish(id, st);
        return;
      }
      this.o.log.info('reconcile: starting VM that should run', { vm: vm.name, was: st.state });
      await this.doStart(vm);
    } else if (vm.desired === 'stopped' && running) {
      this.o.log.info('reconcile: stopping VM that should be stopped', { vm: vm.name });
      await this.o.runtime.stop(id, { graceful: false, timeoutMs: 0 });
      await this.publish(id, await this.o.runtime.status(id));
    } else {
      if (running) await this.o.runtime.applyRestartPolicy(vm);
      await this.publish(id, st);
    }
  }

  private async doStart(vm: VmRecord, restarts?: number): Promise<void> {
    await this.publish(vm.id, { state: 'starting', pid: null, lastError: null }, restarts);
    try {
      await this.o.runtime.start(vm, this.o.log.child({ vm: vm.name }));
    } catch (err) {
      await this.publish(vm.id, {
        state: 'crashed',
        pid: null,
        lastError: err instanceof Error ? err.message : String(err),
      });
      throw err;
    }
    await this.publish(vm.id, await this.o.runtime.status(vm.id));
  }

  /**
   * The runner restarts by policy on its own; here the store learns what happened, and a guest
   * that powered itself off (with a policy that does not restart it) becomes desired-stopped:
   * that is what its owner wants now.
   */
  private async onRuntimeChange(id: string, st: RuntimeStatus): Promise<void> {
    if (this.closed) return;
    // The gate held a crash restart (lease not fresh, owner unknown): the guard loop restarts
    // it once this host surely owns the VM again.
    if (st.restartHeld) this.fencedPending.add(id);
    const restarted = st.state === 'running' && this.statuses.get(id)?.state !== 'running';
    const prevRestarts = this.statuses.get(id)?.restarts ?? 0;
    await this.publish(id, st, restarted && this.locks.has(id) === false ? prevRestarts : undefined);
    if (!st.guestShutdown) return;
    const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
    if (rec && rec.value.desired === 'running' && rec.value.restartPolicy !== 'always') {
      await this.o.vms.update(id, (cur) => ({ ...cur, desired: 'stopped' }));
    }
  }

  // ---- actions asked for by tasks ----

  async checkCreate(spec: VmCreateSpec): Promise<void> {
    await this.o.provisioner.check(spec);
  }

  async provisionVm(spec: VmCreateSpec, t: TaskHandle): Promise<VmRecord> {
    for (const r of spec.placementReasons ?? []) t.log(`placement: ${r}`);
    return this.o.provisioner.provision(spec, this.o.hostName, t);
  }

  async startVm(id: string, t: TaskHandle): Promise<{ state: string }> {
    return this.withLock(id, async () => {
      const vm = await this.o.vms.update(id, (cur) => ({ ...cur, desired: 'running' }));
      const st = await this.o.runtime.status(id);
      if (st.state === 'running' || st.state === 'paused') {
        t.log(`${vm.name} is already ${st.state}`);
        return { state: st.state };
      }
      await this.admit(vm, t);
      t.log(`starting ${vm.name} on ${this.o.hostName}`);
      await this.doStart(vm);
      t.log(`${vm.name} is running`);
      return { state: 'running' };
    });
  }

  /** Refuses a start that would take this host past its memory or vCPU limits. */
  private async admit(vm: VmRecord, t: TaskHandle): Promise<void> {
    const hosts = await this.placementHosts();
    const me = hosts.find((h) => h.name === this.o.hostName);
    if (me) me.state = 'online'; // a host in maintenance still runs what its owner starts by hand
    const decision = place(
      {
        vmId: vm.id,
        cpus: vm.cpus,
        memoryBytes: vm.memoryBytes,
        pinnedHost: this.o.hostName,
        antiAffinity: vm.antiAffinity,
      },
      hosts,
      await this.placedVms(),
    );
    for (const r of decision.reasons) t.log(`admission: ${r}`);
  }

  async placementHosts(): Promise<PlacementHost[]> {
    const hosts = await this.o.store.list<HostRecord>('hosts/');
    const alive = new Set((await this.o.store.list<{ name: string }>('alive/')).map((x) => x.value.name));
    return hosts.map(({ value: h }) => ({
      name: h.name,
      state: alive.has(h.name) ? h.state : 'lost',
      cpus: h.cpus,
      memoryBytes: h.memoryBytes,
    }));
  }

  async placedVms(): Promise<PlacedVm[]> {
    return (await this.o.store.list<VmRecord>('vms/')).map(({ value: v }) => ({
      id: v.id,
      host: v.host,
      cpus: v.cpus,
      memoryBytes: v.memoryBytes,
      antiAffinity: v.antiAffinity ?? null,
      desired: v.desired,
    }));
  }

  async stopVm(id: string, opts: { graceful: boolean; timeoutMs: number }, t: TaskHandle): Promise<{ state: string }> {
    return this.withLock(id, async () => {
      const vm = await this.o.vms.update(id, (cur) => ({ ...cur, desired: 'stopped' }));
      const st = await this.o.runtime.status(id);
      if (st.state !== 'stopped' && st.state !== 'crashed') {
        await this.publish(id, { ...st, state: 'stopping' });
        t.log(
          opts.graceful
            ? `asking ${vm.name} to shut down (ACPI), forcing after ${opts.timeoutMs} ms`
            : `powering ${vm.name} off`,
        );
        await this.o.runtime.stop(id, opts);
      }
      const after = await this.o.runtime.status(id);
      await this.publish(id, after);
      return { state: after.state };
    });
  }

  async pauseVm(id: string, paused: boolean, _t: TaskHandle): Promise<{ state: string }> {
    return this.withLock(id, async () => {
      await this.o.runtime.setPaused(id, paused);
      const st = await this.o.runtime.status(id);
      await this.publish(id, st);
      return { state: st.state };
    });
  }

  async rebootVm(id: string, t: TaskHandle): Promise<{ state: string }> {
    return this.withLock(id, async () => {
      t.log('resetting the VM');
      await this.o.runtime.reboot(id);
      const st = await this.o.runtime.status(id);
      await this.publish(id, st);
      return { state: st.state };
    });
  }

  async destroyVm(id: string, t: TaskHandle): Promise<{ deleted: string }> {
    return this.withLock(id, async () => {
      const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
      if (!rec) throw new FdError('FD_VM_NOT_FOUND', `no VM ${id}`);
      const st = await this.o.runtime.status(id);
      if (st.state !== 'stopped' && st.state !== 'crashed') {
        t.log(`stopping ${rec.value.name}`);
        await this.o.runtime.stop(id, { graceful: false, timeoutMs: 0 });
      }
      await this.o.runtime.cleanup(id);
      await this.protection.forget(rec.value);
      await this.o.vms.remove(id);
      this.statuses.delete(id);
      await this.o.provisioner.removeVmDisks(rec.value, t);
      return { deleted: rec.value.name };
    });
  }

  serialSocket(id: string): Promise<string> {
    return this.o.runtime.serialSocket(id);
  }

  vncSocket(id: string): Promise<string> {
    return this.o.runtime.vncSocket(id);
  }

  screenshot(id: string): Promise<Buffer> {
    return this.o.runtime.screenshot(id);
  }

  logs(id: string, lines: number): Promise<{ serial: string[]; qemu: string[] }> {
    return this.o.runtime.logs(id, lines);
  }

  async stats(): Promise<VmStats[]> {
    const mine = (await this.o.vms.list()).filter(
      (v) => v.host === this.o.hostName && (v.state === 'running' || v.state === 'paused'),
    );
    return this.o.runtime.stats(mine.map((v) => ({ id: v.id, name: v.name })));
  }

  // ---- live migration ----

  /** Source side: moves a running VM to `to` (or where placement says), see migration.ts. */
  async migrateVm(
    id: string,
    to: string | undefined,
    tunables: MigrationTunables,
    t: TaskHandle,
  ): Promise<MigrationResult> {
    return this.withLock(id, async () => {
      this.activeMigrations.add(id);
      try {
        return await this.migrateLocked(id, to, tunables, t);
      } finally {
        this.activeMigrations.delete(id);
      }
    });
  }

  private async migrateLocked(
    id: string,
    to: string | undefined,
    tunables: MigrationTunables,
    t: TaskHandle,
  ): Promise<MigrationResult> {
    const t0 = Date.now();
    const { value: vm } = await this.o.vms.find(id);
    if (vm.host !== this.o.hostName)
      throw new FdError('FD_OWNER_MOVED', `VM ${vm.name} is owned by ${vm.host} now`, { status: 409 });
    const st = await this.o.runtime.status(id);
    if (st.state !== 'running' && st.state !== 'paused') {
      throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${st.state}; live migration moves running VMs`, {
        status: 409,
      });
    }
    const hosts = await this.placementHosts();
    if (to === this.o.hostName)
      throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs on ${to}`, { status: 409 });
    const d = place(
      {
        vmId: vm.id,
        cpus: vm.cpus,
        memoryBytes: vm.memoryBytes,
        antiAffinity: vm.antiAffinity,
        exclude: [this.o.hostName],
        pinnedHost: to ?? null,
      },
      hosts,
      await this.placedVms(),
    );
    for (const r of d.reasons) t.log(`placement: ${r}`);
    const target = d.host;
    if (target === this.o.hostName)
      throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs on ${target}`, { status: 409 });
    const targetRec = (await this.o.store.get<HostRecord>(`hosts/${target}`))?.value;
    const targetState = hosts.find((h) => h.name === target)?.state;
    if (!targetRec || targetState !== 'online') {
      throw new FdError(
        'FD_HOST_UNAVAILABLE',
        `host ${target} is ${targetState ?? 'unknown'}; it cannot take VMs now`,
        { status: 409 },
      );
    }
    const disks = await Promise.all(
      vm.disks.map(async (d) => {
        const rec = (await this.o.store.get<DiskRecord>(`disks/${d.diskId}`))?.value;
        if (!rec) throw new Error(`disk record ${d.diskId} missing`);
        return { id: d.id, sizeBytes: rec.sizeBytes, baseImage: rec.baseImage };
      }),
    );
    t.log(`migrating ${vm.name} from ${this.o.hostName} to ${target}`);
    const base = `/api/v1/vms/${vm.id}/migration`;
    // What a daemon that dies mid-migration needs to finish or undo it (recoverMigrations).
    const intent: MigrationIntent = {
      vmId: vm.id,
      from: this.o.hostName,
      to: target,
      phase: 'copying',
      at: new Date().toISOString(),
    };
    await this.o.store.put(`migrations/${vm.id}`, intent);
    const prepared = await callPeer<PreparedTarget & { diskPaths: Record<string, string> }>(
      targetRec,
      this.o.peerToken,
      'POST',
      `${base}/prepare`,
      {
        id: vm.id,
        source: this.o.hostName,
        disks,
        // Capabilities that must match on both ends (multifd, postcopy).
        multifd: tunables.multifd,
        postcopy: tunables.postcopy,
      },
    );
    const qmp = this.o.runtime.qmp(id);
    const diskIds = prepared.disks.map((d) => d.id);
    let moved: Omit<MigrationResult, 'from' | 'to' | 'totalTimeMs'>;
    let tPaused = 0;
    try {
      moved = await migrateFromSource({ qmp, target: prepared, tunables, task: t, log: this.o.log });
      tPaused = Date.now();
      await this.o.store.put(`migrations/${vm.id}`, { ...intent, phase: 'finishing' });
    } catch (err) {
      // The target never ran the guest: resume here, and have the target remove its side.
      t.log(`migration failed, the VM stays on ${this.o.hostName}: ${(err as Error).message}`);
      // Released already when the copy failed; not when the memory moved and the intent did not.
      await releaseSourceMirrors(qmp, diskIds, prepared.nbd, this.o.log).catch(() => undefined);
      await qmp.execute<{ status: string }>('query-status').then(
        (q) => (q.status === 'running' ? undefined : qmp.execute('cont')),
        () => undefined,
      );
      await this.abortTarget(vm.id, intent, t);
      throw err;
    }
    // The guest is paused here and in sync there: the target runs it first, and only then
    // are the source's (idle) mirror jobs released; the pause is QEMU's downtime plus one call.
    const tFinish = Date.now();
    let loadWaitMs = 0;
    // Bounded: the guest is paused until this answers or resolveFinishing finds out.
    const finished = await callPeer<{ loadWaitMs?: number }>(
      targetRec,
      this.o.peerToken,
      'POST',
      `${base}/finish`,
      { id: vm.id },
      FINISH_CALL_MS,
    ).then(
      (r) => {
        loadWaitMs = r.loadWaitMs ?? 0;
        return true;
      },
      (err: unknown) => {
        t.log(`finish on ${target} failed: ${(err as Error).message}; asking ${target} what it runs`);
        return false;
      },
    );
    // Where the pause beyond QEMU's own downtime goes (the intent write, the finish call).
    if (finished)
      t.log(
        `switch-over: intent ${tFinish - tPaused} ms, finish on ${target} ${Date.now() - tFinish} ms (of which ${loadWaitMs} ms waiting for its QEMU to load the last state)`,
      );
    const targetDisks = finished ? prepared.diskPaths : await this.resolveFinishing(vm, intent, t);
    if (!targetDisks) {
      throw new FdError('FD_MIGRATION_FAILED', `finishing on ${target} failed; the VM runs on ${this.o.hostName}`, {
        hint: 'the VM keeps running on its host; check the target host and try again',
      });
    }
    await releaseSourceMirrors(qmp, diskIds).catch((err: unknown) =>
      this.o.log.warn('releasing the mirrors of a migrated source', { err: String(err) }),
    );
    // QEMU sometimes reports 'completed' before it has computed the downtime: ask again now
    // that the guest runs (not while it was paused).
    if (!moved.downtimeMs) {
      const q = await qmp.execute<{ downtime?: number }>('query-migrate').catch(() => undefined);
      moved = { ...moved, downtimeMs: q?.downtime ?? 0 };
    }
    // The guest runs on the target now: move ownership, then retire the source side.
    await this.completeMove(vm, target, targetDisks);
    const result: MigrationResult = { from: this.o.hostName, to: target, totalTimeMs: Date.now() - t0, ...moved };
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
  private async abortTarget(vmId: string, intent: MigrationIntent, t?: TaskHandle): Promise<void> {
    const targetRec = (await this.o.store.get<HostRecord>(`hosts/${intent.to}`))?.value;
    const aborted = targetRec
      ? await callPeer(
          targetRec,
          this.o.peerToken,
          'POST',
          `/api/v1/vms/${vmId}/migration/abort`,
          { id: vmId },
          ABORT_CALL_MS,
        ).then(
          () => true,
          (err: unknown) => {
            this.o.log.warn('target cleanup after a failed migration failed; retrying', { err: String(err) });
            return false;
          },
        )
      : true;
    if (aborted) {
      await this.o.store.remove(`migrations/${vmId}`);
      return;
    }
    t?.log(`${intent.to} is out of reach; it will remove its side when it can be reached again`);
    const aborting: MigrationIntent = { ...intent, phase: 'aborting', at: new Date().toISOString() };
    await this.o.store.put(`migrations/${vmId}`, aborting);
    void this.retryAbort(vmId, aborting);
  }

  /** Calls the target's abort every few seconds until it answers, the intent changes or we close. */
  private async retryAbort(vmId: string, intent: MigrationIntent): Promise<void> {
    while (!this.closed) {
      await sleep(ABORT_RETRY_MS);
      const cur = (await this.o.store.get<MigrationIntent>(`migrations/${vmId}`).catch(() => undefined))?.value;
      if (!cur || cur.at !== intent.at || cur.phase !== 'aborting') return;
      const targetRec = (await this.o.store.get<HostRecord>(`hosts/${intent.to}`).catch(() => undefined))?.value;
      const ok =
        !targetRec ||
        (await callPeer(
          targetRec,
          this.o.peerToken,
          'POST',
          `/api/v1/vms/${vmId}/migration/abort`,
          { id: vmId },
          ABORT_CALL_MS,
        ).then(
          () => true,
          () => false,
        ));
      if (ok) {
        this.o.log.info('the target of a failed migration removed its side', { vm: vmId, to: intent.to });
        await this.o.store.remove(`migrations/${vmId}`).catch(() => undefined);
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
  private async resolveFinishing(
    vm: VmRecord,
    intent: MigrationIntent,
    t?: TaskHandle,
  ): Promise<Record<string, string> | null> {
    for (let i = 0; ; i++) {
      const targetRec = (await this.o.store.get<HostRecord>(`hosts/${intent.to}`))?.value;
      const call = <T>(step: string): Promise<T> =>
        callPeer<T>(
          targetRec!,
          this.o.peerToken,
          'POST',
          `/api/v1/vms/${vm.id}/migration/${step}`,
          { id: vm.id },
          ABORT_CALL_MS,
        );
      // A host removed from the cluster runs nothing of ours.
      const aborted = !targetRec
        ? 'yes'
        : await call('abort').then(
            () => 'yes' as const,
            (err: unknown) => (isFdError(err, 'FD_MIGRATION_TARGET_RAN') ? ('ran' as const) : ('no' as const)),
          );
      if (aborted === 'ran') {
        const st = await call<{ diskPaths: Record<string, string> }>('state').catch(() => undefined);
        if (st) return st.diskPaths;
      } else if (aborted === 'yes') {
        const qmp = this.o.runtime.qmp(vm.id);
        await releaseSourceMirrors(
          qmp,
          vm.disks.map((d) => d.id),
        ).catch(() => undefined);
        await qmp.execute('cont');
        await this.o.store.remove(`migrations/${vm.id}`);
        return null;
      }
      if (i % 10 === 0) {
        const msg = `${intent.to} does not answer; the VM stays paused here until it does`;
        t?.log(msg);
        this.o.log.warn(msg, { vm: vm.name });
      }
      if (this.closed) throw new FdError('FD_MIGRATION_FAILED', 'daemon stopping; the next start resolves the move');
      await sleep(ABORT_RETRY_MS);
    }
  }

  /** Ownership to `target` (with its disk paths), then the source side's processes and files go. */
  private async completeMove(vm: VmRecord, target: string, diskPaths: Record<string, string>): Promise<void> {
    await this.o.vms.update(vm.id, (cur) => ({ ...cur, host: target }));
    for (const d of vm.disks) {
      await this.o.store.mutate<DiskRecord>(`disks/${d.diskId}`, (cur) => ({
        ...cur,
        host: target,
        path: diskPaths[d.id] ?? cur.path,
      }));
    }
    await this.o.store.remove(`migrations/${vm.id}`);
    this.statuses.delete(vm.id);
    await this.o.runtime
      .stop(vm.id, { graceful: false, timeoutMs: 0 })
      .catch((err: unknown) => this.o.log.warn('stopping the migrated source', { err: String(err) }));
    await this.o.runtime.cleanup(vm.id);
    await this.o.provisioner.removeVmDir(vm.id);
  }

  /**
   * A daemon that died during a migration left work half done. As the source: if the target
   * already runs the guest, the move is completed; otherwise the source resumes and the target
   * removes its side. One copy runs afterwards either way.
   */
  private async recoverMigrations(): Promise<void> {
    for (const { value: m } of await this.o.store.list<MigrationIntent>('migrations/')) {
      const rec = (await this.o.store.get<VmRecord>(`vms/${m.vmId}`))?.value;
      if (!rec) {
        await this.o.store.remove(`migrations/${m.vmId}`);
        continue;
      }
      if (m.from !== this.o.hostName || rec.host !== this.o.hostName || this.activeMigrations.has(m.vmId)) continue;
      if (m.phase === 'finishing') {
        // The target may run the guest already: resolved in the background, under the VM's
        // lock, with the source paused until the target answers.
        void this.withLock(m.vmId, async () => {
          const disks = await this.resolveFinishing(rec, m);
          if (disks) {
            this.o.log.warn('completing a migration whose daemon died after the target took over', {
              vm: rec.name,
              to: m.to,
            });
            await this.completeMove(rec, m.to, disks);
          } else this.o.log.warn('undid a migration whose daemon died while finishing', { vm: rec.name, to: m.to });
        }).catch((err: unknown) => this.o.log.error('resolving an interrupted migration', { err: String(err) }));
        continue;
      }
      if (m.phase === 'aborting') {
        // The source resumed already; only the target's side is left to remove.
        await this.abortTarget(m.vmId, m);
        continue;
      }
      this.o.log.warn('undoing a migration cut short by a daemon restart', { vm: rec.name, to: m.to });
      try {
        const qmp = this.o.runtime.qmp(m.vmId);
        await qmp.execute('migrate_cancel').catch(() => undefined);
        const jobs = await qmp
          .execute<{ device: string }[]>('query-block-jobs')
          .catch(() => [] as { device: string }[]);
        await releaseSourceMirrors(
          qmp,
          jobs.filter((j) => j.device.startsWith('mig-')).map((j) => j.device.slice(4)),
        );
        const q = await qmp.execute<{ status: string }>('query-status');
        if (q.status !== 'running') await qmp.execute('cont');
      } catch (err) {
        this.o.log.warn('source side of an interrupted migration', { err: String(err) });
      }
      await this.abortTarget(m.vmId, m);
    }
  }

  /** Target side: whether this host runs the guest it was receiving (recovery asks). */
  async incomingState(id: string): Promise<{ qemuStatus: string | null; diskPaths: Record<string, string> }> {
    const qemuStatus = await this.qemuStatus(id);
    const { value: vm } = await this.o.vms.find(id);
    return {
      qemuStatus,
      diskPaths: Object.fromEntries(vm.disks.map((d) => [d.id, this.o.provisioner.migrationDiskPath(id, d.id)])),
    };
  }

  /** QEMU's run state for a VM on this host, or null when no QEMU runs it here. */
  private async qemuStatus(id: string): Promise<string | null> {
    try {
      return (await this.o.runtime.qmp(id).execute<{ status: string }>('query-status')).status;
    } catch {
      return null;
    }
  }

  /** Target side, step 1: disks, vdisk and a QEMU waiting for the incoming migration. */
  async prepareIncoming(req: {
    id: string;
    source: string;
    disks: { id: string; sizeBytes: number; baseImage: string | null }[];
    multifd?: boolean;
    postcopy?: boolean;
  }): Promise<PreparedTarget & { diskPaths: Record<string, string> }> {
    return this.withLock(req.id, async () => {
      const { value: vm } = await this.o.vms.find(req.id);
      if (vm.host === this.o.hostName)
        throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs here`, { status: 409 });
      const st = await this.o.runtime.status(req.id);
      if (st.state === 'running' || st.state === 'paused' || st.state === 'starting') {
        throw new FdError('FD_MIGRATION_BUSY', `a QEMU for VM ${vm.name} already runs on ${this.o.hostName}`, {
          status: 409,
        });
      }
      await this.o.runtime.cleanup(req.id);
      const made = await this.o.provisioner.prepareMigrationDisks(vm.id, req.disks);
      const listenHost = new URL(this.o.apiUrl).hostname.replace(/^\[|\]$/g, '');
      try {
        await this.o.runtime.startIncoming(vm, made.paths);
        const qmp = this.o.runtime.qmp(req.id);
        const nbdPort = await freePort(listenHost);
        await qmp.execute('nbd-server-start', {
          addr: { type: 'inet', data: { host: listenHost, port: String(nbdPort) } },
        });
        for (const d of req.disks) {
          await qmp.execute('block-export-add', {
            type: 'nbd',
            id: mirrorNode(d.id),
            'node-name': qemuIds.diskNode(d.id),
            name: mirrorNode(d.id),
            writable: true,
          });
        }
        const migPort = await freePort(listenHost);
        await qmp.execute('migrate-set-capabilities', {
          capabilities: [
            { capability: 'multifd', state: req.multifd ?? false },
            { capability: 'postcopy-ram', state: req.postcopy ?? false },
          ],
        });
        await qmp.execute('migrate-incoming', { uri: `tcp:${listenHost}:${migPort}` });
        return {
          nbd: { host: listenHost, port: nbdPort },
          disks: req.disks.map((d) => ({ id: d.id, exportName: mirrorNode(d.id), sync: made.sync[d.id] ?? 'full' })),
          migrateUri: `tcp:${listenHost}:${migPort}`,
          diskPaths: made.paths,
        };
      } catch (err) {
        await this.o.runtime.stop(req.id, { graceful: false, timeoutMs: 0 }).catch(() => undefined);
        await this.o.runtime.cleanup(req.id).catch(() => undefined);
        await this.o.provisioner.removeVmDir(req.id);
        throw err;
      }
    });
  }

  /** Target side, step 2: the source is paused and in sync; run the guest here. */
  async finishIncoming(id: string): Promise<{ pid: number | null; loadWaitMs: number }> {
    return this.withLock(id, async () => {
      const qmp = this.o.runtime.qmp(id);
      const t0 = Date.now();
      for (let i = 0; ; i++) {
        const q = await qmp.execute<{ status: string }>('query-status');
        if (q.status !== 'inmigrate') break;
        if (i > 3000) throw new FdError('FD_MIGRATION_FAILED', 'the target never left the incoming state');
        await sleep(2);
      }
      const mig = await qmp.execute<{ status?: string }>('query-migrate');
      if (mig.status && mig.status !== 'completed')
        throw new FdError('FD_MIGRATION_FAILED', `incoming migration ${mig.status}`);
      const loadWaitMs = Date.now() - t0;
      // The guest is paused on both hosts until this `cont`. The exports only served the
      // source's mirrors, idle since the source paused: they go after the guest runs.
      await qmp.execute('cont');
      const exports = await qmp.execute<{ id: string }[]>('query-block-exports');
      for (const e of exports) await qmp.execute('block-export-del', { id: e.id, mode: 'hard' });
      await qmp.execute('nbd-server-stop').catch(() => undefined);
      const st = await this.o.runtime.status(id);
      return { pid: st.pid, loadWaitMs };
    });
  }

  /** Target side, on failure: nothing of the attempt stays. */
  async abortIncoming(id: string): Promise<{ aborted: true }> {
    return this.withLock(id, async () => {
      const rec = await this.o.store.get<VmRecord>(`vms/${id}`);
      if (rec?.value.host === this.o.hostName)
        throw new FdError('FD_MIGRATION_OWNED', 'this host owns the VM; refusing to tear it down', { status: 409 });
      // After `finish` the guest runs here and its writes are only here: the source must
      // complete the move, not undo it.
      if ((await this.qemuStatus(id)) === 'running')
        throw new FdError('FD_MIGRATION_TARGET_RAN', 'the guest already runs on this host; the move must complete', {
          status: 409,
        });
      await this.o.runtime.stop(id, { graceful: false, timeoutMs: 0 }).catch(() => undefined);
      await this.o.runtime.cleanup(id).catch(() => undefined);
      await this.o.provisioner.removeVmDir(id);
      return { aborted: true };
    });
  }

  /** Maintenance: no new VMs are placed here; running VMs are migrated away by evacuate. */
  async setHostState(state: 'online' | 'maintenance'): Promise<HostRecord> {
    const res = await this.o.store.mutate<HostRecord>(`hosts/${this.o.hostName}`, (cur) => ({ ...cur, state }));
    return res.value;
  }

  // ---- images and disks, through the provisioner ----

  buildTinyImage(force: boolean, t: TaskHandle, probes = false): Promise<unknown> {
    return this.o.provisioner.buildTinyImage(this.o.hostName, force, t, probes);
  }

  importImage(name: string, file: string, t: TaskHandle, opts: { upload?: boolean } = {}): Promise<unknown> {
    return this.o.provisioner.importImage(name, file, this.o.hostName, t, opts);
  }

  deleteImage(name: string): Promise<unknown> {
    return this.o.provisioner.deleteImage(name);
  }

  diskInfo(id: string): Promise<unknown> {
    return this.o.provisioner.diskInfo(id);
  }

  resizeDisk(id: string, sizeBytes: number, t: TaskHandle): Promise<unknown> {
    return this.o.provisioner.resizeDisk(id, sizeBytes, t);
  }

  // ---- appliances (src/appliance) ----

  /** The default pool's per-VM directories, where imported disks go. */
  get vmsDir(): string {
    return join(this.o.provisioner.poolDir, 'vms');
  }

  /** Runs `fn` holding the locks of these VMs, so no power action runs while their disks are read. */
  exclusive<T>(ids: string[], fn: () => Promise<T>): Promise<T> {
    const [first, ...rest] = [...new Set(ids)].sort();
    if (!first) return fn();
    return this.withLock(first, () => this.exclusive(rest, fn));
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stopWatch?.();
    await this.stopHostWatch?.();
    await this.stopNetWatch?.();
    this.protection.close();
    if (this.guardTimer) clearInterval(this.guardTimer);
    await Promise.allSettled([...this.locks.values()]);
    // The keeper outlives the daemon while guarded VMs run here: their liveness must not
    // depend on the daemon. Otherwise it goes, and the host shows lost.
    const guarded = await readGuarded(this.o.dataDir).catch(() => [] as string[]);
    const running = await Promise.all(guarded.map((id) => this.o.runtime.status(id).catch(() => undefined)));
    if (!running.some((st) => st?.state === 'running' || st?.state === 'paused'))
      await stopKeeper(this.o.dataDir).catch(() => undefined);
    await this.o.runtime.close();
  }
}

/** A migration in flight, recorded by its source so a restarted daemon can finish or undo it. */
export interface MigrationIntent {
  vmId: string;
  from: string;
  to: string;
  /**
   * copying: disks and memory moving; finishing: the target was told to run the guest;
   * aborting: the migration failed, the source runs the guest, the target still has to
   * remove its side (it could not be reached).
   */
  phase: 'copying' | 'finishing' | 'aborting';
  at: string;
}
