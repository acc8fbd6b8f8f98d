/**
 * The standby's half of a mirror: a vdisk process serving fresh copies of a protected VM's
 * disks on TCP (export names are random: only the primary that asked knows them), recorded in
 * DATA/mirrors/ID.json so that it survives the daemon. Taking a copy over fences it first: the
 * process is killed and waited for, so nothing the old primary still sends (a thawed host, a
 * packet in flight) can land on the disk the VM then boots from.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readJsonFile, writeJsonFile } from '../../core/atomic-file.js';
import { FdError } from '../../core/errors.js';
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { freePort } from '../../core/ports.js';
import { isRunning, terminate, type ProcIdentity } from '../../host/pidfile.js';
import { startVdisk } from '../../host/vdisk-process.js';
import type { DiskFiles, DiskPlan } from '../provisioning/disks.js';
import type { ProtectionRecord, StandbyMirror } from '../state/model.js';
import type { State } from '../state/state.js';

/** What a standby keeps on its own disk about a mirror it serves. */
export interface LocalMirror extends StandbyMirror {
  vmId: string;
  primary: string;
  vdisk: ProcIdentity;
}

export interface StandbyDeps {
  hostName: string;
  listenAddress: () => string;
  dataDir: string;
  state: State;
  disks: DiskFiles;
  locks: KeyedLock;
  log: Logger;
}

/** A copy just made whose primary has not recorded it yet is kept this long. */
const SWEEP_GRACE_MS = 60_000;

export class StandbyCopies {
  constructor(private readonly d: StandbyDeps) {}

  private file(vmId: string): string {
    return join(this.d.dataDir, 'mirrors', `${vmId}.json`);
  }

  local(vmId: string): Promise<LocalMirror | undefined> {
    return readJsonFile<LocalMirror>(this.file(vmId));
  }

  /** Serves fresh copies of the VM's disks on TCP for `primary` to mirror into. */
  prepare(req: { id: string; primary: string; disks: DiskPlan[] }): Promise<StandbyMirror> {
    return this.d.locks.run(req.id, async () => {
      const { value: vm } = await this.d.state.vms.find(req.id);
      if (vm.host === this.d.hostName)
        throw new FdError('FD_PROTECT_SAME_HOST', `this host runs ${vm.name}; it cannot be its standby`);
      await this.releaseLocked(req.id);
      const dir = this.d.disks.mirrorDir(req.id);
      const made = await this.d.disks.prepareCopies(req.disks, dir);
      const host = this.d.listenAddress();
      const disks: StandbyMirror['disks'] = [];
      for (const dk of req.disks) {
        disks.push({
          id: dk.id,
          port: await freePort(host),
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
          tcp: { host, port: dk.port },
        })),
        configPath: join(dir, 'vdisk.json'),
        logPath: join(dir, 'vdisk.log'),
      });
      const local: LocalMirror = { vmId: req.id, primary: req.primary, host, disks, vdisk };
      await mkdir(join(this.d.dataDir, 'mirrors'), { recursive: true });
      await writeJsonFile(this.file(req.id), local);
      this.d.log.info('serving a standby copy', { vm: vm.name, primary: req.primary, pid: vdisk.pid });
      return { host, disks };
    });
  }

  /** Drops this host's standby copy of a VM (unprotect, a new standby, a re-sync). */
  release(id: string): Promise<{ released: boolean }> {
    return this.d.locks.run(id, async () => ({ released: await this.releaseLocked(id) }));
  }

  /** As release, for a caller that holds the VM's lock already. */
  async releaseLocked(id: string): Promise<boolean> {
    const local = await this.local(id);
    if (local) await terminate(local.vdisk, 2000);
    await rm(this.file(id), { force: true });
    await rm(this.d.disks.mirrorDir(id), { recursive: true, force: true });
    return !!local;
  }

  /**
   * Standby copies nobody mirrors into any more (the primary chose another standby while this
   * host was away, or the VM is gone) are dropped.
   */
  async sweep(recs: ProtectionRecord[]): Promise<void> {
    const dir = join(this.d.dataDir, 'mirrors');
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const id = name.slice(0, -5);
      if (recs.find((r) => r.vmId === id)?.standby === this.d.hostName) continue;
      const age = Date.now() - (await stat(join(dir, name))).mtimeMs;
      if (age < SWEEP_GRACE_MS) continue;
      this.d.log.info('dropping a standby copy no primary uses', { vm: id });
      await this.release(id);
    }
  }

  /** Whether this host holds a copy of the VM whose vdisk has run all along. */
  async live(id: string): Promise<LocalMirror | undefined> {
    const local = await this.local(id);
    return local && isRunning(local.vdisk) ? local : undefined;
  }

  /**
   * The storage fence: the copy's vdisk is killed and waited for (SIGKILL, or a clean stop that
   * flushes when `clean`); nothing can reach the copy after this resolves.
   */
  async fence(local: LocalMirror, opts: { clean: boolean }): Promise<void> {
    if (!opts.clean) process.kill(local.vdisk.pid, 'SIGKILL');
    await terminate(local.vdisk, opts.clean ? 10_000 : 5000);
  }

  /** Moves the (fenced) copy to where the VM's own disks live on this host; returns their paths. */
  async adopt(id: string, local: LocalMirror): Promise<Record<string, string>> {
    const vmDir = this.d.disks.vmDir(id);
    await rm(vmDir, { recursive: true, force: true });
    await rename(this.d.disks.mirrorDir(id), vmDir);
    await rm(this.file(id), { force: true });
    return Object.fromEntries(local.disks.map((dk) => [dk.id, this.d.disks.receivedPath(id, dk.id)]));
  }
}
