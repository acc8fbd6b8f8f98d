/**
 * The disk files of VMs in this host's default pool: where a VM's disks live, the copies a
 * migration target or a standby receives (a differencing child over the same base image when
 * this host has it, so only the top layer travels), growing a disk, and removing them.
 */
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import { createDifferencingVhd, createVhd } from '../../disk/vhd/create.js';
import { diskInfo } from '../../disk/vhd/info.js';
import { resizeVhd } from '../../disk/vhd/resize.js';
import type { DiskRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';

export interface DiskPlan {
  id: string;
  sizeBytes: number;
  baseImage: string | null;
}

export interface PreparedDisks {
  paths: Record<string, string>;
  /** top: only the top layer needs copying (same base here); full: everything. */
  sync: Record<string, 'top' | 'full'>;
}

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

export class DiskFiles {
  /** The default pool's directory; VMs live in its vms/ID folders, standby copies in mirrors/. */
  readonly poolDir: string;

  constructor(private readonly o: { state: State; dataDir: string }) {
    this.poolDir = join(o.dataDir, 'pools', 'default');
  }

  get vmsDir(): string {
    return join(this.poolDir, 'vms');
  }

  vmDir(vmId: string): string {
    return join(this.vmsDir, vmId);
  }

  /** Where a VM's disk lives once it was received by migration or failover. */
  receivedPath(vmId: string, diskId: string): string {
    return join(this.vmDir(vmId), `${diskId}.vhd`);
  }

  /** A standby's copies of a protected VM's disks. */
  mirrorDir(vmId: string): string {
    return join(this.poolDir, 'mirrors', vmId);
  }

  /** The disks of a VM as another host needs to know them to take a copy. */
  plans(vm: { disks: { id: string; diskId: string }[] }): DiskPlan[] {
    return vm.disks.map((d) => {
      const rec = this.o.state.catalog.findDisk(d.diskId);
      if (!rec) throw new Error(`disk record ${d.diskId} missing`);
      return { id: d.id, sizeBytes: rec.sizeBytes, baseImage: rec.baseImage };
    });
  }

  /** Fresh disks to receive a VM's copy in `dir` (the VM's folder, or a mirror folder). */
  async prepareCopies(disks: DiskPlan[], dir: string): Promise<PreparedDisks> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const out: PreparedDisks = { paths: {}, sync: {} };
    for (const d of disks) {
      const path = join(dir, `${d.id}.vhd`);
      const base = d.baseImage ? this.o.state.catalog.findImage(d.baseImage) : undefined;
      if (base && (await exists(base.path))) {
        await createDifferencingVhd(path, base.path);
        if (d.sizeBytes > base.sizeBytes) await resizeVhd(path, d.sizeBytes);
        out.sync[d.id] = 'top';
      } else {
        await createVhd(path, { sizeBytes: d.sizeBytes, type: 'dynamic' });
        out.sync[d.id] = 'full';
      }
      out.paths[d.id] = path;
    }
    return out;
  }

  async removeVmDir(vmId: string): Promise<void> {
    await rm(this.vmDir(vmId), { recursive: true, force: true });
  }

  async info(ref: string): Promise<DiskRecord & { engine: unknown }> {
    const d = this.o.state.catalog.getDisk(ref);
    return { ...d, engine: await diskInfo(d.path) };
  }

  async resize(ref: string, sizeBytes: number, t: TaskHandle): Promise<DiskRecord> {
    const d = this.o.state.catalog.getDisk(ref);
    if (d.vmId) {
      const st = this.o.state.vms.status(d.vmId);
      if (st && st.state !== 'stopped' && st.state !== 'crashed')
        throw new FdError('FD_VM_RUNNING', 'stop the VM before resizing its disk');
    }
    if (sizeBytes < d.sizeBytes)
      throw new FdError('FD_DISK_SHRINK', 'disks only grow', { hint: `give a size of at least ${d.sizeBytes} bytes` });
    t.log(`growing ${d.name} to ${sizeBytes} bytes`);
    await resizeVhd(d.path, sizeBytes);
    return this.o.state.catalog.updateDisk(d.id, (cur) => ({ ...cur, sizeBytes }));
  }
}
