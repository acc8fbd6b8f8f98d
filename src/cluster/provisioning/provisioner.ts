/**
 * Makes the files behind VMs on this host and records them: a VM's disk as a differencing VHD
 * over its image (many VMs start from one base) or a blank VHD for an install, its cloud-init
 * seed ISO, its NIC addresses. Records go to the store in one transaction with the VM, after
 * the files exist, so a crash leaves at most an unreferenced directory that init() sweeps
 * away, never a record pointing at nothing.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { totalmem } from 'node:os';
import { FdError } from '../../core/errors.js';
import { macFromSeed, newUuid } from '../../core/ids.js';
import type { Logger } from '../../core/log.js';
import { createDifferencingVhd, createVhd } from '../../disk/vhd/create.js';
import { resizeVhd } from '../../disk/vhd/resize.js';
import { TINY_MIN_MEMORY_BYTES } from '../../host/images/tiny.js';
import type { DiskRecord, ImageRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';
import { DiskFiles } from './disks.js';
import { Images } from './images.js';
import { NetworkProvisioner } from './networks.js';
import { buildSeedIso, type CloudInitFields } from './seed.js';

export interface VmCreateSpec {
  name: string;
  image?: string | undefined;
  iso?: string | undefined;
  cpus: number;
  memory: number;
  diskSize?: number | undefined;
  network: string;
  cloudInit?: CloudInitFields | undefined;
  restartPolicy: VmRecord['restartPolicy'];
  firmware: VmRecord['firmware'];
  antiAffinity?: string | undefined;
}

export interface ProvisionerOptions {
  /** What the default network is on a new installation: a NAT bridge, or user-mode networking. */
  defaultNetwork: 'nat' | 'user';
  state: State;
  dataDir: string;
  hostName: string;
  log: Logger;
}

/** VHD holds at most 2040 GiB. */
const MAX_DISK_BYTES = 2040 * 1024 ** 3;
/** A VM directory younger than this may belong to a create in flight. */
const ORPHAN_GRACE_MS = 60_000;

export class Provisioner {
  readonly disks: DiskFiles;
  readonly images: Images;
  readonly networks: NetworkProvisioner;

  constructor(private readonly o: ProvisionerOptions) {
    this.disks = new DiskFiles(o);
    this.images = new Images(o);
    this.networks = new NetworkProvisioner(o);
  }

  async init(): Promise<void> {
    await mkdir(this.disks.vmsDir, { recursive: true });
    await mkdir(this.images.dir, { recursive: true });
    await this.networks.init();
    await this.sweepOrphans();
  }

  /** Removes VM directories that no record references (a create that died before its commit). */
  private async sweepOrphans(): Promise<void> {
    const ids = new Set(this.o.state.vms.records().map((v) => v.id));
    for (const name of await readdir(this.disks.vmsDir)) {
      if (ids.has(name)) continue;
      const st = await stat(join(this.disks.vmsDir, name));
      if (Date.now() - st.mtimeMs > ORPHAN_GRACE_MS) {
        this.o.log.info('removing an unreferenced VM directory left by an interrupted create', { dir: name });
        await rm(join(this.disks.vmsDir, name), { recursive: true, force: true });
      }
    }
  }

  /** Refuses a spec that cannot be made here, naming every problem at once; changes nothing. */
  check(spec: VmCreateSpec): void {
    const { catalog } = this.o.state;
    const problems: string[] = [];
    if (spec.image) {
      const image = catalog.getImage(spec.image);
      if (image.kind !== 'disk') problems.push(`image ${spec.image} is an ISO; pass it as --iso`);
      if (image.kernel && spec.memory < TINY_MIN_MEMORY_BYTES)
        problems.push(`memory: ${spec.image} needs at least ${TINY_MIN_MEMORY_BYTES / 1024 / 1024}M`);
      if (spec.diskSize !== undefined && spec.diskSize < image.sizeBytes)
        problems.push(`diskSize: smaller than the image (${image.sizeBytes} bytes)`);
    }
    if (spec.iso) {
      const iso = catalog.getImage(spec.iso);
      if (iso.kind !== 'iso') problems.push(`image ${spec.iso} is a disk image, not an ISO`);
    }
    if (spec.network !== 'none') catalog.getNetwork(spec.network);
    if (spec.memory > totalmem()) problems.push(`memory: more than this host has (${totalmem()} bytes)`);
    if (spec.diskSize !== undefined && spec.diskSize > MAX_DISK_BYTES)
      problems.push('diskSize: VHD holds at most 2040 GiB');
    if (problems.length) {
      throw new FdError('FD_VM_SPEC_INVALID', `cannot create VM ${spec.name}: ${problems.join('; ')}`, {
        details: problems,
        hint: 'fix the options named above',
      });
    }
  }

  async provision(spec: VmCreateSpec, t: TaskHandle): Promise<VmRecord> {
    this.check(spec);
    const id = newUuid();
    const dir = this.disks.vmDir(id);
    await mkdir(dir, { recursive: true });
    try {
      const image = spec.image ? this.o.state.catalog.getImage(spec.image) : undefined;
      const disks = await this.firstDisk(spec, id, dir, image, t);
      const cdroms: VmRecord['cdroms'] = [];
      if (spec.iso) cdroms.push({ id: 'cd0', image: spec.iso, path: null, bus: 'sata' });
      if (spec.cloudInit) {
        t.log('building the cloud-init NoCloud seed ISO');
        const iso = await buildSeedIso(dir, spec.name, spec.cloudInit);
        cdroms.push({ id: `cd${cdroms.length}`, image: null, path: iso, bus: 'scsi' });
      }
      const now = new Date().toISOString();
      const vm: VmRecord = {
        id,
        name: spec.name,
        cpus: spec.cpus,
        memoryBytes: spec.memory,
        machine: 'q35',
        firmware: spec.firmware,
        boot: spec.iso ? ['cdrom', 'disk'] : ['disk'],
        // An installer ISO boots through the firmware; direct kernel boot would bypass it.
        kernelImage: image?.kernel && !spec.iso ? image.name : null,
        disks: disks.map((d, i) => ({ id: `disk${i}`, diskId: d.id })),
        cdroms,
        nics:
          spec.network === 'none'
            ? []
            : [
                {
                  id: 'net0',
                  mac: macFromSeed(createHash('sha256').update(id).digest()),
                  network: spec.network,
                  ip: await this.networks.allocateAddress(spec.network, id),
                },
              ],
        restartPolicy: spec.restartPolicy,
        ha: null,
        antiAffinity: spec.antiAffinity ?? null,
        desired: 'stopped',
        host: this.o.hostName,
        image: image?.name ?? null,
        createdAt: now,
        updatedAt: now,
      };
      await this.o.state.vms.create(vm, disks);
      t.log(`VM ${vm.name} created (${vm.id})`);
      return vm;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      await this.networks.releaseAddresses(id);
      throw err;
    }
  }

  /** disk0: a differencing child of the image, or a blank dynamic VHD of the asked size. */
  private async firstDisk(
    spec: VmCreateSpec,
    vmId: string,
    dir: string,
    image: ImageRecord | undefined,
    t: TaskHandle,
  ): Promise<DiskRecord[]> {
    if (!image && !spec.diskSize) return [];
    const path = join(dir, 'disk0.vhd');
    if (image) {
      t.log(`creating disk0 as a differencing VHD over image ${image.name}`);
      await createDifferencingVhd(path, image.path);
      if (spec.diskSize && spec.diskSize > image.sizeBytes) await resizeVhd(path, spec.diskSize);
    } else {
      t.log(`creating a blank ${spec.diskSize} byte dynamic VHD`);
      await createVhd(path, { sizeBytes: spec.diskSize!, type: 'dynamic' });
    }
    const size = spec.diskSize && (!image || spec.diskSize > image.sizeBytes) ? spec.diskSize : image!.sizeBytes;
    return [
      {
        id: newUuid(),
        name: `${spec.name}-disk0`,
        pool: 'default',
        path,
        format: 'vhd',
        sizeBytes: size,
        baseImage: image?.name ?? null,
        vmId,
        host: this.o.hostName,
        createdAt: new Date().toISOString(),
      },
    ];
  }

  /** A deleted VM's disk records, addresses and files go. */
  async removeVmDisks(vm: VmRecord, t: TaskHandle): Promise<void> {
    await this.networks.releaseAddresses(vm.id);
    for (const d of vm.disks) await this.o.state.catalog.removeDisk(d.diskId);
    await this.disks.removeVmDir(vm.id);
    t.log('disks removed');
  }
}
