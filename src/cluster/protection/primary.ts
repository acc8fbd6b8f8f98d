/**
 * The primary's loop: every PROTECT_TICK_MS, for each protected VM this host owns, keep its
 * mirror going. It (re)starts the mirror after a QEMU restart, a standby loss or an I/O error,
 * chooses another standby when the old one is lost (yanking the connections to the old one
 * first: a cut link would otherwise hang guest writes), and publishes the state in
 * protection/ID: syncing while the initial copy runs, protected once every disk is in sync,
 * degraded (with the reason) otherwise. Reads come from the state cache: an idle host asks
 * etcd nothing.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { placeIn } from '../clustering/placement.js';
import type { Peers } from '../peer/client.js';
import { protectionPrepare } from '../peer/contracts.js';
import type { DiskFiles } from '../provisioning/disks.js';
import type { Runtime } from '../runtime/runtime.js';
import type { ProtectionRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import { mirrorJobs, startMirrorJobs, stopMirrorJobs, yankMirrors } from './mirror.js';
import type { StandbyCopies } from './standby.js';

const PROTECT_TICK_MS = 500;
/** A mirror that could not start is tried again after this long. */
const RETRY_AFTER_MS = 2000;
/** Standby copies nobody uses are looked for every this many ticks. */
const SWEEP_EVERY_TICKS = 20;
/** Progress of an initial sync is written at most this often. */
const PROGRESS_EVERY_MS = 1000;
const PREPARE_CALL_MS = 30_000;

export interface PrimaryDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  disks: DiskFiles;
  peers: Peers;
  locks: KeyedLock;
  log: Logger;
}

/** The standby a VM's mirror should go to: the one asked for, the current one, or placement's choice. */
export function chooseStandby(
  d: { state: State },
  vm: VmRecord,
  rec: Pick<ProtectionRecord, 'requestedStandby' | 'standby'>,
): string | undefined {
  const alive = d.state.hosts.alive();
  const ok = (h: string | null): h is string => !!h && h !== vm.host && alive.has(h);
  if (ok(rec.requestedStandby)) return rec.requestedStandby;
  if (ok(rec.standby)) return rec.standby;
  try {
    return placeIn(d.state, {
      vmId: vm.id,
      cpus: vm.cpus,
      memoryBytes: vm.memoryBytes,
      exclude: [vm.host],
      antiAffinity: vm.antiAffinity,
      pinnedHost: null,
    }).host;
  } catch {
    return undefined;
  }
}

export class MirrorKeeper {
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Set<string>();
  private readonly retryAt = new Map<string, number>();
  private closed = false;
  private ticks = 0;

  constructor(
    private readonly d: PrimaryDeps,
    private readonly standby: StandbyCopies,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), PROTECT_TICK_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** A new standby was asked for, or the record was made again: try at once. */
  retryNow(vmId: string): void {
    this.retryAt.delete(vmId);
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    const recs = this.d.state.protection.list();
    if (++this.ticks % SWEEP_EVERY_TICKS === 0)
      await this.standby
        .sweep(recs)
        .catch((err: unknown) => this.d.log.warn('sweeping standby copies failed', { err: String(err) }));
    for (const rec of recs) {
      // Only the primary keeps a mirror; other hosts must not take the VM's lock for nothing.
      if (this.d.state.vms.cached(rec.vmId)?.value.host !== this.d.hostName) continue;
      if (this.busy.has(rec.vmId)) continue;
      this.busy.add(rec.vmId);
      void this.d.locks
        .run(rec.vmId, () => this.keep(rec.vmId))
        .catch((err: unknown) => this.d.log.warn('protection step failed', { vm: rec.vmId, err: String(err) }))
        .finally(() => this.busy.delete(rec.vmId));
    }
  }

  private setState(rec: ProtectionRecord, patch: Partial<ProtectionRecord>): Promise<void> {
    Object.assign(rec, patch);
    return this.d.state.protection.patch(rec.vmId, patch);
  }

  private async keep(vmId: string): Promise<void> {
    const rec = this.d.state.protection.get(vmId);
    const vm = this.d.state.vms.cached(vmId)?.value;
    if (!rec || !vm || vm.host !== this.d.hostName || this.closed) return;
    const diskIds = vm.disks.map((dk) => dk.id);
    const st = await this.d.runtime.status(vmId);
    if (st.state !== 'running' && st.state !== 'paused') {
      if (rec.state !== 'degraded' || rec.primary !== this.d.hostName)
        await this.setState(rec, { state: 'degraded', lastError: `the VM is ${st.state}`, primary: this.d.hostName });
      return;
    }
    const ctl = this.d.runtime.control(vmId);
    const jobs = await mirrorJobs(ctl);
    if (jobs.length === vm.disks.length && jobs.length > 0) {
      if (rec.standby && !this.d.state.hosts.isAlive(rec.standby)) {
        await yankMirrors(ctl, diskIds);
        await stopMirrorJobs(ctl, diskIds, { graceful: false });
        await this.setState(rec, { state: 'degraded', lastError: `standby ${rec.standby} is lost` });
        return;
      }
      const ready = jobs.every((j) => j.ready && j.status === 'ready');
      const done = jobs.reduce((a, j) => a + j.offset, 0);
      const total = jobs.reduce((a, j) => a + j.len, 0);
      if (ready && rec.state !== 'protected') await this.setState(rec, { state: 'protected', lastError: null });
      else if (!ready && (rec.state !== 'syncing' || Date.now() - Date.parse(rec.updatedAt) > PROGRESS_EVERY_MS))
        await this.setState(rec, { state: 'syncing', progress: { done, total } });
      return;
    }
    // No complete set of jobs: (re)start the mirror, after the old pieces (jobs, and the NBD
    // nodes a failed job leaves behind) are gone.
    await stopMirrorJobs(ctl, diskIds, { graceful: false });
    if (rec.state !== 'degraded' && rec.standby)
      await this.setState(rec, {
        state: 'degraded',
        lastError: `the mirror to ${rec.standby} stopped (standby lost, I/O error or QEMU restart)`,
      });
    if ((this.retryAt.get(vmId) ?? 0) > Date.now()) return;
    this.retryAt.set(vmId, Date.now() + RETRY_AFTER_MS);
    const standby = chooseStandby(this.d, vm, rec);
    if (!standby) {
      await this.setState(rec, {
        state: 'degraded',
        standby: null,
        lastError: 'no other host can take the standby copy',
      });
      return;
    }
    await this.startMirror(vm, rec, standby);
  }

  private async startMirror(vm: VmRecord, rec: ProtectionRecord, standby: string): Promise<void> {
    let mirror;
    try {
      mirror = await this.d.peers.call(
        standby,
        protectionPrepare,
        { id: vm.id, primary: this.d.hostName, disks: this.d.disks.plans(vm) },
        { timeoutMs: PREPARE_CALL_MS },
      );
    } catch (err) {
      await this.setState(rec, {
        state: 'degraded',
        primary: this.d.hostName,
        lastError: `standby ${standby} cannot take a copy: ${(err as Error).message}`,
      });
      return;
    }
    await this.setState(rec, { state: 'syncing', standby, progress: null, lastError: null, primary: this.d.hostName });
    const ctl = this.d.runtime.control(vm.id);
    try {
      await startMirrorJobs(ctl, mirror);
      this.d.log.info('mirroring to the standby', { vm: vm.name, standby });
    } catch (err) {
      await stopMirrorJobs(
        ctl,
        vm.disks.map((dk) => dk.id),
        { graceful: false },
      );
      await this.setState(rec, { state: 'degraded', lastError: `mirror to ${standby}: ${(err as Error).message}` });
      throw err;
    }
  }
}
