/**
 * VM mirroring: a synchronous copy of a running VM's disks on a standby host, and the two ways
 * the VM gets there (unplanned takeover after its host is lost, planned failover).
 *
 * Primary side: the VM's QEMU runs `blockdev-mirror` with copy-mode=write-blocking from each
 * disk into the standby's vdisk over NBD/TCP. After the initial sync (job `ready`) every guest
 * write completes on both copies before the guest sees it complete, so the standby holds every
 * acknowledged write. A loop per protected VM (every PROTECT_TICK_MS) keeps that true: it
 * (re)starts the mirror after a QEMU restart, a standby loss or an I/O error, chooses another
 * standby when the old one is lost, and publishes the state (syncing, protected, degraded) in
 * protection/ID.
 *
 * Standby side: a vdisk process serving the copies on TCP (export names are random: only the
 * primary that asked knows them), recorded in DATA/mirrors/ID.json so it survives the daemon.
 * Takeover fences it first: the process is killed and waited for, so nothing the old primary
 * still sends (a thawed host, a packet in flight) can land on the disk the VM now boots from.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { sleep } from '../../core/process.js';
import { qemuIds } from '../../qemu/argv.js';
import type { QmpClient } from '../../qemu/qmp.js';
import { isRunning, terminate, type ProcIdentity } from '../../host/pidfile.js';
import { startVdisk } from '../../host/vdisk-process.js';
import { readJsonFile, writeJsonFile } from '../../core/atomic-file.js';
import type { DiskRecord, HostRecord, ProtectionRecord, StandbyMirror, VmRecord } from '../state/model.js';
import { callPeer } from '../peer/client.js';
import { place, type PlacedVm, type PlacementHost } from '../clustering/placement.js';
import type { Provisioner } from '../provisioning/provisioner.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Store } from '../state/store.js';
import type { TaskHandle } from '../state/tasks.js';
import { freePort } from '../../core/ports.js';

const PROTECT_TICK_MS = 500;
const RETRY_AFTER_MS = 2000;

export const protNode = (diskId: string): string => `prot-${diskId}`;

interface BlockJob {
  device: string;
  offset: number;
  len: number;
  ready: boolean;
  status: string;
}

/** What a standby keeps on its own disk about a mirror it serves. */
interface LocalMirror extends StandbyMirror {
  vmId: string;
  primary: string;
  vdisk: ProcIdentity;
}

export interface ProtectionDeps {
  store: Store;
  runtime: Runtime;
  provisioner: Provisioner;
  hostName: string;
  dataDir: string;
  apiUrl: () => string;
  peerToken: string;
  log: Logger;
  withLock: <T>(id: string, fn: () => Promise<T>) => Promise<T>;
  placementHosts: () => Promise<PlacementHost[]>;
  placedVms: () => Promise<PlacedVm[]>;
  /** Called when this host now owns a VM it did not (takeover, planned failover). */
  adopted: (id: string) => Promise<void>;
}

export class Protection {
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Set<string>();
  private readonly retryAt = new Map<string, number>();
  private closed = false;
  private ticks = 0;

  constructor(private readonly d: ProtectionDeps) {}

  start(): void {
    this.timer = setInterval(() => void this.tick(), PROTECT_TICK_MS);
    this.timer.unref();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  private mirrorsDir(): string {
    return join(this.d.provisioner.poolDir, 'mirrors');
  }

  private localMirrorFile(vmId: string): string {
    return join(this.d.dataDir, 'mirrors', `${vmId}.json`);
  }

  // ---- user-facing: protect, unprotect, planned failover ----

  /** Refuses a protect that cannot work (checked before the task exists; changes nothing). */
  async checkProtect(vmId: string, standby: string | null): Promise<VmRecord> {
    const vm = (await this.d.store.get<VmRecord>(`vms/${vmId}`))?.value;
    if (!vm) throw new FdError('FD_VM_NOT_FOUND', `no VM ${vmId}`);
    if (standby === vm.host)
      throw new FdError('FD_PROTECT_SAME_HOST', `${standby} runs ${vm.name}; the standby must be another host`, {
        status: 409,
      });
    if (standby && !(await this.d.store.get<HostRecord>(`hosts/${standby}`)))
      throw new FdError('FD_HOST_NOT_FOUND', `no host ${standby}`, { status: 404 });
    const alive = new Set((await this.d.store.list<{ name: string }>('alive/')).map((a) => a.value.name));
    if (standby && !alive.has(standby))
      throw new FdError('FD_HOST_UNAVAILABLE', `host ${standby} is lost; it cannot take a standby copy now`, {
        status: 409,
      });
    if (!standby && !(await this.chooseStandby(vm, { requestedStandby: null, standby: null }, alive)))
      throw new FdError('FD_NO_STANDBY_HOST', `no host other than ${vm.host} can take a copy of ${vm.name}`, {
        status: 409,
        hint: 'mirroring needs a second host: flightdeck cluster join (see the README), or the lab',
      });
    return vm;
  }

  async protect(vmId: string, standby: string | null, t: TaskHandle): Promise<ProtectionRecord> {
    const vm = await this.checkProtect(vmId, standby);
    const now = new Date().toISOString();
    const prev = (await this.d.store.get<ProtectionRecord>(`protection/${vmId}`))?.value;
    if (prev && prev.requestedStandby !== standby && prev.standby) {
      // A new standby was asked for: drop the current mirror, the loop starts the new one.
      await this.dropMirror(vm, prev.standby, 'the standby was changed');
    }
    await this.d.store.put<ProtectionRecord>(`protection/${vmId}`, {
      vmId,
      requestedStandby: standby,
      primary: vm.host,
      standby: prev?.requestedStandby === standby ? (prev?.standby ?? null) : null,
      state: prev?.requestedStandby === standby ? prev.state : 'syncing',
      progress: null,
      lastError: null,
      since: prev?.since ?? now,
      updatedAt: now,
    });
    this.retryAt.delete(vmId);
    t.log(`protecting ${vm.name}${standby ? ` with a standby on ${standby}` : ''}`);
    const st = await this.d.runtime.status(vmId);
    if (st.state !== 'running' && st.state !== 'paused') {
      t.log(`${vm.name} is ${st.state}: the mirror starts when it runs`);
      return (await this.d.store.get<ProtectionRecord>(`protection/${vmId}`))!.value;
    }
    // Show the initial sync as this task's progress; done when protected. A mirror that cannot
    // start (degraded for a while with a reason) fails the task; the loop keeps trying.
    let degradedSince = 0;
    for (;;) {
      if (t.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'protect cancelled (the mirror keeps syncing)');
      const rec = (await this.d.store.get<ProtectionRecord>(`protection/${vmId}`))?.value;
      if (!rec) throw new FdError('FD_PROTECTION_REMOVED', `${vm.name} was unprotected meanwhile`);
      degradedSince = rec.state === 'degraded' && rec.lastError ? degradedSince || Date.now() : 0;
      if (degradedSince && Date.now() - degradedSince > 20_000)
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
      await sleep(250);
    }
  }

  async unprotect(vmId: string, t: TaskHandle): Promise<{ unprotected: string }> {
    const vm = (await this.d.store.get<VmRecord>(`vms/${vmId}`))?.value;
    if (!vm) throw new FdError('FD_VM_NOT_FOUND', `no VM ${vmId}`);
    const rec = (await this.d.store.get<ProtectionRecord>(`protection/${vmId}`))?.value;
    if (!rec) throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`, { status: 409 });
    await this.d.withLock(vmId, async () => {
      await this.d.store.remove(`protection/${vmId}`);
      if (rec.standby) await this.dropMirror(vm, rec.standby, 'unprotected');
    });
    t.log(`${vm.name} is no longer mirrored`);
    return { unprotected: vm.name };
  }

  /** A VM being deleted: its protection record goes, and the standby drops its copy. */
  async forget(vm: VmRecord): Promise<void> {
    const rec = (await this.d.store.get<ProtectionRecord>(`protection/${vm.id}`))?.value;
    if (!rec) return;
    await this.d.store.remove(`protection/${vm.id}`);
    if (rec.standby) await this.dropMirror(vm, rec.standby, 'the VM was deleted');
  }

  /** Ends the mirror jobs here and tells the standby to drop its copy. */
  private async dropMirror(vm: VmRecord, standby: string, why: string): Promise<void> {
    await this.cancelJobs(vm, false).catch(() => undefined);
    const host = (await this.d.store.get<HostRecord>(`hosts/${standby}`))?.value;
    if (host)
      await callPeer(host, this.d.peerToken, 'POST', `/api/v1/vms/${vm.id}/protection/release`, { id: vm.id }).catch(
        (err: unknown) => this.d.log.warn('standby could not drop its copy', { vm: vm.name, why, err: String(err) }),
      );
  }

  private async cancelJobs(vm: VmRecord, graceful: boolean): Promise<void> {
    let qmp: QmpClient;
    try {
      qmp = this.d.runtime.qmp(vm.id);
    } catch {
      return;
    }
    const jobs = await qmp.execute<BlockJob[]>('query-block-jobs').catch(() => [] as BlockJob[]);
    const mine = jobs.filter((j) => j.device.startsWith('prot-'));
    for (const j of mine)
      await qmp.execute('block-job-cancel', { device: j.device, force: !graceful }).catch(() => undefined);
    for (let i = 0; i < 200; i++) {
      const left = await qmp.execute<BlockJob[]>('query-block-jobs').catch(() => [] as BlockJob[]);
      if (!left.some((j) => j.device.startsWith('prot-'))) break;
      await sleep(20);
    }
    for (const dk of vm.disks)
      await qmp.execute('blockdev-del', { 'node-name': protNode(dk.id) }).catch(() => undefined);
  }

  // ---- primary side: keep every protected VM of this host mirrored ----

  private async tick(): Promise<void> {
    if (this.closed) return;
    let recs: ProtectionRecord[];
    try {
      recs = (await this.d.store.list<ProtectionRecord>('protection/')).map((r) => r.value);
    } catch {
      return;
    }
    if (++this.ticks % 20 === 0)
      await this.sweepCopies(recs).catch((err: unknown) =>
        this.d.log.warn('sweeping standby copies failed', { err: String(err) }),
      );
    let owners: Map<string, string>;
    try {
      owners = new Map((await this.d.store.list<VmRecord>('vms/')).map((v) => [v.value.id, v.value.host]));
    } catch {
      return;
    }
    for (const rec of recs) {
      // Only the primary keeps a mirror; other hosts must not take the VM's lock for nothing.
      if (owners.get(rec.vmId) !== this.d.hostName) continue;
      if (this.busy.has(rec.vmId)) continue;
      this.busy.add(rec.vmId);
      void this.d
        .withLock(rec.vmId, () => this.keep(rec.vmId))
        .catch((err: unknown) => this.d.log.warn('protection step failed', { vm: rec.vmId, err: String(err) }))
        .finally(() => this.busy.delete(rec.vmId));
    }
  }

  private async keep(vmId: string): Promise<void> {
    const rec = (await this.d.store.get<ProtectionRecord>(`protection/${vmId}`))?.value;
    const vm = (await this.d.store.get<VmRecord>(`vms/${vmId}`))?.value;
    if (!rec || !vm || vm.host !== this.d.hostName || this.closed) return;
    const st = await this.d.runtime.status(vmId);
    if (st.state !== 'running' && st.state !== 'paused') {
      if (rec.state !== 'degraded' || rec.primary !== this.d.hostName)
        await this.setState(rec, { state: 'degraded', lastError: `the VM is ${st.state}`, primary: this.d.hostName });
      return;
    }
    const qmp = this.d.runtime.qmp(vmId);
    const jobs = (await qmp.execute<BlockJob[]>('query-block-jobs')).filter((j) => j.device.startsWith('prot-'));
    const alive = new Set((await this.d.store.list<{ name: string }>('alive/')).map((a) => a.value.name));
    if (jobs.length === vm.disks.length && jobs.length > 0) {
      if (rec.standby && !alive.has(rec.standby)) {
        // A lost standby may hang the mirror's writes (a cut link never errors): yank the
        // connections so the jobs fail now and the guest's writes go on, degraded.
        for (const dk of vm.disks)
          await qmp
            .execute('yank', { instances: [{ type: 'block-node', 'node-name': protNode(dk.id) }] })
            .catch(() => undefined);
        await this.cancelJobs(vm, false);
        await this.setState(rec, { state: 'degraded', lastError: `standby ${rec.standby} is lost` });
        return;
      }
      const ready = jobs.every((j) => j.ready && j.status === 'ready');
      const done = jobs.reduce((a, j) => a + j.offset, 0);
      const total = jobs.reduce((a, j) => a + j.len, 0);
      if (ready && rec.state !== 'protected') await this.setState(rec, { state: 'protected', lastError: null });
      else if (!ready && (rec.state !== 'syncing' || Date.now() - Date.parse(rec.updatedAt) > 1000))
        await this.setState(rec, { state: 'syncing', progress: { done, total } });
      return;
    }
    // No complete set of jobs: (re)start the mirror, after the old pieces (jobs, and the NBD
    // nodes a failed job leaves behind) are gone.
    await this.cancelJobs(vm, false);
    if (rec.state !== 'degraded' && rec.standby)
      await this.setState(rec, {
        state: 'degraded',
        lastError: `the mirror to ${rec.standby} stopped (standby lost, I/O error or QEMU restart)`,
      });
    if ((this.retryAt.get(vmId) ?? 0) > Date.now()) return;
    this.retryAt.set(vmId, Date.now() + RETRY_AFTER_MS);
    const standby = await this.chooseStandby(vm, rec, alive);
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

  private async chooseStandby(
    vm: VmRecord,
    rec: Pick<ProtectionRecord, 'requestedStandby' | 'standby'>,
    alive: Set<string>,
  ): Promise<string | undefined> {
    const ok = (h: string | null): h is string => !!h && h !== vm.host && alive.has(h);
    if (ok(rec.requestedStandby)) return rec.requestedStandby;
    if (ok(rec.standby)) return rec.standby;
    try {
      const d = place(
        {
          vmId: vm.id,
          cpus: vm.cpus,
          memoryBytes: vm.memoryBytes,
          exclude: [vm.host],
          antiAffinity: vm.antiAffinity,
          pinnedHost: null,
        },
        await this.d.placementHosts(),
        await this.d.placedVms(),
      );
      return d.host;
    } catch {
      return undefined;
    }
  }

  private async startMirror(vm: VmRecord, rec: ProtectionRecord, standby: string): Promise<void> {
    const host = (await this.d.store.get<HostRecord>(`hosts/${standby}`))?.value;
    if (!host) return;
    const disks = await Promise.all(
      vm.disks.map(async (dk) => {
        const r = (await this.d.store.get<DiskRecord>(`disks/${dk.diskId}`))?.value;
        if (!r) throw new Error(`disk record ${dk.diskId} missing`);
        return { id: dk.id, sizeBytes: r.sizeBytes, baseImage: r.baseImage };
      }),
    );
    let mirror: StandbyMirror;
    try {
      mirror = await callPeer<StandbyMirror>(
        host,
        this.d.peerToken,
        'POST',
        `/api/v1/vms/${vm.id}/protection/prepare`,
        { id: vm.id, primary: this.d.hostName, disks },
        30_000,
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
    const qmp = this.d.runtime.qmp(vm.id);
    try {
      for (const dk of mirror.disks) {
        await qmp.execute('blockdev-add', {
          driver: 'nbd',
          'node-name': protNode(dk.id),
          server: { type: 'inet', host: mirror.host, port: String(dk.port) },
          export: dk.exportName,
        });
        await qmp.execute('blockdev-mirror', {
          'job-id': protNode(dk.id),
          device: qemuIds.diskNode(dk.id),
          target: protNode(dk.id),
          sync: dk.sync,
          // Every guest write reaches both copies before it completes, once the bulk copy is done.
          'copy-mode': 'write-blocking',
        });
      }
      this.d.log.info('mirroring to the standby', { vm: vm.name, standby });
    } catch (err) {
      await this.cancelJobs(vm, false);
      await this.setState(rec, { state: 'degraded', lastError: `mirror to ${standby}: ${(err as Error).message}` });
      throw err;
    }
  }

  private async setState(rec: ProtectionRecord, patch: Partial<ProtectionRecord>): Promise<void> {
    await this.d.store
      .mutate<ProtectionRecord>(`protection/${rec.vmId}`, (cur) => {
        const next = { ...cur, ...patch, updatedAt: new Date().toISOString() };
        if (patch.state && patch.state !== cur.state) next.since = next.updatedAt;
        if (patch.state === 'protected') next.progress = null;
        return next;
      })
      .catch((err: unknown) => {
        if (!(err instanceof FdError)) throw err;
      });
    Object.assign(rec, patch);
  }

  // ---- standby side ----

  /** Serves fresh copies of the VM's disks on TCP for `primary` to mirror into. */
  async prepareStandby(req: {
    id: string;
    primary: string;
    disks: { id: string; sizeBytes: number; baseImage: string | null }[];
  }): Promise<StandbyMirror> {
    return this.d.withLock(req.id, async () => {
      const vm = (await this.d.store.get<VmRecord>(`vms/${req.id}`))?.value;
      if (!vm) throw new FdError('FD_VM_NOT_FOUND', `no VM ${req.id}`);
      if (vm.host === this.d.hostName)
        throw new FdError('FD_PROTECT_SAME_HOST', `this host runs ${vm.name}; it cannot be its standby`, {
          status: 409,
        });
      await this.releaseLocal(req.id);
      const dir = join(this.mirrorsDir(), req.id);
      const made = await this.d.provisioner.prepareMigrationDisks(req.id, req.disks, dir);
      const listenHost = new URL(this.d.apiUrl()).hostname.replace(/^\[|\]$/g, '');
      const disks: StandbyMirror['disks'] = [];
      for (const dk of req.disks) {
        disks.push({
          id: dk.id,
          port: await freePort(listenHost),
          exportName: `prot-${dk.id}-${randomBytes(12).toString('hex')}`,
          sync: made.sync[dk.id] ?? 'full',
          path: made.paths[dk.id]!,
        });
      }
      const vdisk = await startVdisk({
        exports: disks.map((dk) => ({
          image: dk.path,
          socketPath: '',
          exportName: dk.exportName,
          readOnly: false,
          tcp: { host: listenHost, port: dk.port },
        })),
        configPath: join(dir, 'vdisk.json'),
        logPath: join(dir, 'vdisk.log'),
      });
      const local: LocalMirror = { vmId: req.id, primary: req.primary, host: listenHost, disks, vdisk };
      await mkdir(join(this.d.dataDir, 'mirrors'), { recursive: true });
      await writeJsonFile(this.localMirrorFile(req.id), local);
      this.d.log.info('serving a standby copy', { vm: vm.name, primary: req.primary, pid: vdisk.pid });
      return { host: listenHost, disks };
    });
  }

  /**
   * Standby copies nobody mirrors into any more (the primary chose another standby while this
   * host was away, or the VM is gone) are dropped; a minute's grace covers a copy just made
   * whose primary has not recorded it yet.
   */
  private async sweepCopies(recs: ProtectionRecord[]): Promise<void> {
    const dir = join(this.d.dataDir, 'mirrors');
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      const rec = recs.find((r) => r.vmId === id);
      if (rec?.standby === this.d.hostName) continue;
      const age = Date.now() - (await stat(join(dir, name))).mtimeMs;
      if (age < 60_000) continue;
      this.d.log.info('dropping a standby copy no primary uses', { vm: id });
      await this.release(id);
    }
  }

  /** Drops this host's standby copy of a VM (unprotect, a new standby, a re-sync). */
  async release(id: string): Promise<{ released: boolean }> {
    return this.d.withLock(id, async () => ({ released: await this.releaseLocal(id) }));
  }

  private async releaseLocal(id: string): Promise<boolean> {
    const local = await readJsonFile<LocalMirror>(this.localMirrorFile(id));
    if (local) await terminate(local.vdisk, 2000);
    await rm(this.localMirrorFile(id), { force: true });
    await rm(join(this.mirrorsDir(), id), { recursive: true, force: true });
    return !!local;
  }

  /**
   * Unplanned failover, on the standby (the leader asks): the primary `from` is lost. Fence the
   * copy (kill the mirror's vdisk: the old primary can write nothing more), make it the VM's
   * disk here, take ownership in one transaction that holds only while `from` is still without
   * a lease, then start the VM. Refuses when the mirror did not run continuously (its vdisk
   * died: it may have missed writes).
   */
  async takeover(req: { id: string; from: string }): Promise<{ host: string; state: string }> {
    return this.d.withLock(req.id, async () => {
      const vmRec = await this.d.store.get<VmRecord>(`vms/${req.id}`);
      if (!vmRec) throw new FdError('FD_VM_NOT_FOUND', `no VM ${req.id}`);
      const vm = vmRec.value;
      if (vm.host === this.d.hostName) {
        const st = await this.d.runtime.status(req.id);
        return { host: this.d.hostName, state: st.state }; // done already (a retried call)
      }
      if (vm.host !== req.from)
        throw new FdError('FD_TAKEOVER_STALE', `${vm.name} is owned by ${vm.host}, not ${req.from}`, { status: 409 });
      const local = await readJsonFile<LocalMirror>(this.localMirrorFile(req.id));
      if (!local) throw new FdError('FD_NO_STANDBY_COPY', `this host holds no copy of ${vm.name}`, { status: 409 });
      if (!isRunning(local.vdisk))
        throw new FdError(
          'FD_STANDBY_COPY_STALE',
          `the mirror of ${vm.name} here stopped before the primary was lost; it may miss writes`,
          { status: 409 },
        );
      // Fence: after this no byte from the old primary reaches the copy.
      process.kill(local.vdisk.pid, 'SIGKILL');
      await terminate(local.vdisk, 5000);
      const paths = await this.adoptCopy(req.id, local);
      const prot = await this.d.store.get<ProtectionRecord>(`protection/${req.id}`);
      const now = new Date().toISOString();
      const owned = await this.d.store.txn({
        // Only while the old primary is still without its liveness key: a host that came back
        // keeps its VM (and restarts it itself), and the two can never both win.
        expect: [
          { key: `vms/${req.id}`, rev: vmRec.rev },
          { key: `alive/${req.from}`, rev: '0' },
        ],
        put: [
          { key: `vms/${req.id}`, value: { ...vm, host: this.d.hostName, updatedAt: now } },
          ...(prot
            ? [
                {
                  key: `protection/${req.id}`,
                  value: {
                    ...prot.value,
                    primary: this.d.hostName,
                    standby: null,
                    state: 'degraded',
                    lastError: `failed over from ${req.from}`,
                    since: now,
                    updatedAt: now,
                  } satisfies ProtectionRecord,
                },
              ]
            : []),
        ],
      });
      if (!owned) {
        throw new FdError('FD_TAKEOVER_STALE', `${vm.name} changed or ${req.from} came back; not taking it over`, {
          status: 409,
        });
      }
      await this.pointDisksHere(vm, paths);
      this.d.log.warn('took over a VM from a lost host', { vm: vm.name, from: req.from });
      await this.d.adopted(req.id);
      const st = await this.d.runtime.status(req.id);
      return { host: this.d.hostName, state: st.state };
    });
  }

  /** Moves the standby copy to where the VM's own disks live on this host. */
  private async adoptCopy(id: string, local: LocalMirror): Promise<Record<string, string>> {
    const vmDir = join(this.d.provisioner.poolDir, 'vms', id);
    await rm(vmDir, { recursive: true, force: true });
    await rename(join(this.mirrorsDir(), id), vmDir);
    await rm(this.localMirrorFile(id), { force: true });
    return Object.fromEntries(local.disks.map((dk) => [dk.id, this.d.provisioner.migrationDiskPath(id, dk.id)]));
  }

  private async pointDisksHere(vm: VmRecord, paths: Record<string, string>): Promise<void> {
    for (const dk of vm.disks) {
      await this.d.store.mutate<DiskRecord>(`disks/${dk.diskId}`, (cur) => ({
        ...cur,
        host: this.d.hostName,
        path: paths[dk.id] ?? cur.path,
      }));
    }
  }

  // ---- planned failover ----

  /**
   * Primary side of `vm failover`: moves a protected VM to its standby with no data loss. The
   * guest pauses, the (in sync) mirror ends, the standby starts an incoming QEMU on its copy,
   * memory moves, the standby runs the guest, ownership follows; the old primary becomes the
   * requested standby so the mirror runs the other way. Any failure before the standby runs
   * the guest resumes it here.
   */
  async plannedFailover(id: string, t: TaskHandle): Promise<{ from: string; to: string; pausedMs: number }> {
    return this.d.withLock(id, async () => {
      const vm = (await this.d.store.get<VmRecord>(`vms/${id}`))?.value;
      if (!vm) throw new FdError('FD_VM_NOT_FOUND', `no VM ${id}`);
      if (vm.host !== this.d.hostName)
        throw new FdError('FD_OWNER_MOVED', `VM ${vm.name} is owned by ${vm.host} now`, { status: 409 });
      const rec = (await this.d.store.get<ProtectionRecord>(`protection/${id}`))?.value;
      if (!rec) throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`, { status: 409 });
      if (rec.state !== 'protected' || !rec.standby)
        throw new FdError('FD_PROTECTION_NOT_READY', `${vm.name} is ${rec.state}; failover needs a standby in sync`, {
          status: 409,
          hint: 'wait until `vm show` says protected',
        });
      const standby = rec.standby;
      const host = (await this.d.store.get<HostRecord>(`hosts/${standby}`))?.value;
      if (!host) throw new FdError('FD_HOST_NOT_FOUND', `no host ${standby}`);
      const qmp = this.d.runtime.qmp(id);
      const base = `/api/v1/vms/${id}/protection`;
      t.log(`pausing ${vm.name} on ${this.d.hostName}; its disks are already on ${standby}`);
      const t0 = Date.now();
      await qmp.execute('stop');
      let handed: { migrateUri: string; diskPaths: Record<string, string> } | undefined;
      try {
        await this.cancelJobs(vm, true);
        const h = await callPeer<{ migrateUri: string; diskPaths: Record<string, string> }>(
          host,
          this.d.peerToken,
          'POST',
          `${base}/handover`,
          { id, from: this.d.hostName },
        );
        handed = h;
        t.log('moving memory to the standby');
        await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
        await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 100 * 1024 ** 3, 'downtime-limit': 300 });
        await qmp.execute('migrate', { uri: h.migrateUri });
        for (;;) {
          const q = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
          if (q.status === 'completed') break;
          if (q.status === 'failed' || q.status === 'cancelled')
            throw new FdError('FD_FAILOVER_FAILED', `memory transfer ${q.status}: ${q['error-desc'] ?? ''}`);
          await sleep(20);
        }
        await callPeer(host, this.d.peerToken, 'POST', `${base}/handover-finish`, { id });
      } catch (err) {
        t.log(`failover failed, ${vm.name} resumes on ${this.d.hostName}: ${(err as Error).message}`);
        await qmp.execute('cont').catch(() => undefined);
        if (handed)
          await callPeer(host, this.d.peerToken, 'POST', `/api/v1/vms/${id}/migration/abort`, { id }).catch(
            () => undefined,
          );
        throw err;
      }
      const pausedMs = Date.now() - t0;
      const diskPaths = handed?.diskPaths ?? {};
      // The guest runs on the standby: ownership moves, the mirror turns around.
      await this.d.store.mutate<VmRecord>(`vms/${id}`, (cur) => ({ ...cur, host: standby }));
      for (const dk of vm.disks) {
        await this.d.store.mutate<DiskRecord>(`disks/${dk.diskId}`, (cur) => ({
          ...cur,
          host: standby,
          path: diskPaths[dk.id] ?? cur.path,
        }));
      }
      const now = new Date().toISOString();
      await this.d.store.put<ProtectionRecord>(`protection/${id}`, {
        ...rec,
        requestedStandby: this.d.hostName,
        primary: standby,
        standby: null,
        state: 'syncing',
        progress: null,
        lastError: null,
        since: now,
        updatedAt: now,
      });
      await this.d.runtime.stop(id, { graceful: false, timeoutMs: 0 }).catch(() => undefined);
      await this.d.runtime.cleanup(id);
      await this.d.provisioner.removeVmDir(id);
      t.log(`${vm.name} runs on ${standby} (guest paused ${pausedMs} ms); mirroring back to ${this.d.hostName}`);
      return { from: this.d.hostName, to: standby, pausedMs };
    });
  }

  /** Standby side of a planned failover: the copy becomes the VM's disk under an incoming QEMU. */
  async handover(req: {
    id: string;
    from: string;
  }): Promise<{ migrateUri: string; diskPaths: Record<string, string> }> {
    return this.d.withLock(req.id, async () => {
      const vm = (await this.d.store.get<VmRecord>(`vms/${req.id}`))?.value;
      if (!vm) throw new FdError('FD_VM_NOT_FOUND', `no VM ${req.id}`);
      if (vm.host !== req.from) throw new FdError('FD_TAKEOVER_STALE', `${vm.name} is owned by ${vm.host}`);
      const local = await readJsonFile<LocalMirror>(this.localMirrorFile(req.id));
      if (!local || !isRunning(local.vdisk))
        throw new FdError('FD_NO_STANDBY_COPY', `this host holds no live copy of ${vm.name}`, { status: 409 });
      await terminate(local.vdisk, 10_000); // SIGTERM: the vdisk flushes and closes its copies
      const paths = await this.adoptCopy(req.id, local);
      const listenHost = new URL(this.d.apiUrl()).hostname.replace(/^\[|\]$/g, '');
      await this.d.runtime.cleanup(req.id);
      await this.d.runtime.startIncoming(vm, paths);
      const port = await freePort(listenHost);
      const qmp = this.d.runtime.qmp(req.id);
      await qmp.execute('migrate-incoming', { uri: `tcp:${listenHost}:${port}` });
      return { migrateUri: `tcp:${listenHost}:${port}`, diskPaths: paths };
    });
  }

  async handoverFinish(id: string): Promise<{ pid: number | null }> {
    return this.d.withLock(id, async () => {
      const qmp = this.d.runtime.qmp(id);
      for (let i = 0; ; i++) {
        const q = await qmp.execute<{ status: string }>('query-status');
        if (q.status !== 'inmigrate') break;
        if (i > 1000) throw new FdError('FD_FAILOVER_FAILED', 'the standby never left the incoming state');
        await sleep(10);
      }
      await qmp.execute('cont');
      return { pid: (await this.d.runtime.status(id)).pid };
    });
  }
}
