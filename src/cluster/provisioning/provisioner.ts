/**
 * Makes the files behind VMs and images on this host: a VM's disk as a differencing VHD over
 * its image (many VMs start from one base), blank VHDs for installs, cloud-init seed ISOs,
 * imported images converted to VHD. Records go to the store in one transaction with the VM,
 * after the files exist, so a crash leaves at most an unreferenced directory that init()
 * sweeps away, never a record pointing at nothing.
 */
import { mkdir, readdir, rm, stat, writeFile, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { freemem, totalmem } from 'node:os';
import { FdError } from '../../core/errors.js';
import { newUuid, macFromSeed } from '../../core/ids.js';
import type { Logger } from '../../core/log.js';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { run } from '../../core/process.js';
import { createVhd, createDifferencingVhd } from '../../disk/vhd/create.js';
import { resizeVhd } from '../../disk/vhd/resize.js';
import { diskInfo } from '../../disk/vhd/info.js';
import { buildTinyImage, TINY_MIN_MEMORY_BYTES, withProbes } from '../../host/images/tiny.js';
import { importDirs } from '../../host/host-config.js';
import { importImageFile } from '../../host/image-import.js';
import { openImportSource } from '../../host/import-paths.js';
import { bridgesAllowed, HostNetworks } from '../../host/network.js';
import { chooseDefaultNetwork, claimNetwork } from '../../host/network-choice.js';
import type { Catalog } from '../state/catalog.js';
import type { DiskRecord, HostRecord, ImageRecord, NetworkRecord, VmRecord } from '../state/model.js';
import type { Store } from '../state/store.js';
import type { TaskHandle } from '../state/tasks.js';
import { createHash } from 'node:crypto';
import { copyPrivate } from '../../host/private-files.js';

export interface VmCreateSpec {
  name: string;
  image?: string | undefined;
  iso?: string | undefined;
  cpus: number;
  memory: number;
  diskSize?: number | undefined;
  network: string;
  cloudInit?: { user?: string; sshKey?: string; hostname?: string; password?: string; userData?: string } | undefined;
  restartPolicy: VmRecord['restartPolicy'];
  firmware: VmRecord['firmware'];
  antiAffinity?: string | undefined;
  /** Why placement chose this host (logged in the create task). */
  placementReasons?: string[] | undefined;
}

export interface ProvisionerOptions {
  /** What the default network is on a new installation: a NAT bridge, or user-mode networking. */
  defaultNetwork: 'nat' | 'user';
  store: Store;
  catalog: Catalog;
  dataDir: string;
  hostName: string;
  log: Logger;
}

export class Provisioner {
  readonly poolDir: string;
  readonly imagesDir: string;

  private readonly networks: HostNetworks;

  constructor(private readonly o: ProvisionerOptions) {
    this.poolDir = join(o.dataDir, 'pools', 'default');
    this.imagesDir = join(o.dataDir, 'images');
    this.networks = new HostNetworks({ dataDir: o.dataDir });
  }

  async init(): Promise<void> {
    await mkdir(join(this.poolDir, 'vms'), { recursive: true });
    await mkdir(this.imagesDir, { recursive: true });
    const createdAt = new Date().toISOString();
    // The default network is chosen once (a free bridge and subnet: daemons run side by side)
    // and recorded; an installation from before claims what it recorded.
    const existing = (await this.o.store.get<NetworkRecord>('networks/default'))?.value;
    const net: NetworkRecord =
      existing ??
      (this.o.defaultNetwork === 'nat' && (await bridgesAllowed())
        ? { name: 'default', kind: 'nat', ...(await chooseDefaultNetwork(this.o.dataDir)), vni: null, createdAt }
        : { name: 'default', kind: 'user', bridge: null, cidr: '10.0.2.0/24', vni: null, createdAt });
    if (existing?.kind === 'nat' && existing.bridge && existing.cidr)
      await claimNetwork({ bridge: existing.bridge, cidr: existing.cidr }, this.o.dataDir);
    await this.o.store.create(`networks/default`, net);
    await this.ensureNetworks();
    await this.refreshClusterNetworks();
    await this.sweepOrphans();
  }

  /** Brings up every NAT network's bridge, rules and DHCP on this host (idempotent). */
  async ensureNetworks(): Promise<void> {
    for (const n of (await this.o.store.list<NetworkRecord>('networks/')).map((x) => x.value)) {
      if (n.kind !== 'nat' || !n.bridge || !n.cidr) continue;
      await this.networks.ensure({ name: n.name, bridge: n.bridge, subnet: n.cidr, nat: true, dhcp: true });
    }
  }

  /** Removes VM directories that no record references (a create that died before its commit). */
  private async sweepOrphans(): Promise<void> {
    const ids = new Set((await this.o.store.list<VmRecord>('vms/')).map((v) => v.value.id));
    for (const name of await readdir(join(this.poolDir, 'vms'))) {
      if (ids.has(name)) continue;
      const st = await stat(join(this.poolDir, 'vms', name));
      // A create in flight on another daemon of this data dir cannot exist (one daemon per
      // data dir), but give recent dirs a grace period anyway.
      if (Date.now() - st.mtimeMs > 60_000) {
        this.o.log.info('removing an unreferenced VM directory left by an interrupted create', { dir: name });
        await rm(join(this.poolDir, 'vms', name), { recursive: true, force: true });
      }
    }
  }

  async check(spec: VmCreateSpec): Promise<void> {
    const problems: string[] = [];
    let image: ImageRecord | undefined;
    if (spec.image) {
      image = await this.o.catalog.getImage(spec.image);
      if (image.kind !== 'disk') problems.push(`image ${spec.image} is an ISO; pass it as --iso`);
      if (image.kernel && spec.memory < TINY_MIN_MEMORY_BYTES)
        problems.push(`memory: ${spec.image} needs at least ${TINY_MIN_MEMORY_BYTES / 1024 / 1024}M`);
      if (spec.diskSize !== undefined && spec.diskSize < image.sizeBytes)
        problems.push(`diskSize: smaller than the image (${image.sizeBytes} bytes)`);
    }
    if (spec.iso) {
      const iso = await this.o.catalog.getImage(spec.iso);
      if (iso.kind !== 'iso') problems.push(`image ${spec.iso} is a disk image, not an ISO`);
    }
    if (spec.network !== 'none') await this.o.catalog.getNetwork(spec.network);
    if (spec.memory > totalmem()) problems.push(`memory: more than this host has (${totalmem()} bytes)`);
    if (spec.diskSize !== undefined && spec.diskSize > 2040 * 1024 ** 3)
      problems.push('diskSize: VHD holds at most 2040 GiB');
    if (problems.length) {
      throw new FdError('FD_VM_SPEC_INVALID', `cannot create VM ${spec.name}: ${problems.join('; ')}`, {
        details: problems,
        hint: 'fix the options named above',
      });
    }
  }

  async provision(spec: VmCreateSpec, host: string, t: TaskHandle): Promise<VmRecord> {
    await this.check(spec);
    const id = newUuid();
    const dir = join(this.poolDir, 'vms', id);
    await mkdir(dir, { recursive: true });
    try {
      const now = new Date().toISOString();
      const image = spec.image ? await this.o.catalog.getImage(spec.image) : undefined;
      const disks: DiskRecord[] = [];
      if (image || spec.diskSize) {
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
        disks.push({
          id: newUuid(),
          name: `${spec.name}-disk0`,
          pool: 'default',
          path,
          format: 'vhd',
          sizeBytes: size,
          baseImage: image?.name ?? null,
          vmId: id,
          host,
          createdAt: now,
        });
      }
      const cdroms: VmRecord['cdroms'] = [];
      if (spec.iso) cdroms.push({ id: 'cd0', image: spec.iso, path: null, bus: 'sata' });
      if (spec.cloudInit) {
        t.log('building the cloud-init NoCloud seed ISO');
        cdroms.push({ id: `cd${cdroms.length}`, image: null, path: await this.buildSeedIso(dir, spec), bus: 'scsi' });
      }
      const mac = macFromSeed(createHash('sha256').update(id).digest());
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
            : [{ id: 'net0', mac, network: spec.network, ip: await this.allocateIp(spec.network, id) }],
        restartPolicy: spec.restartPolicy,
        ha: null,
        antiAffinity: spec.antiAffinity ?? null,
        desired: 'stopped',
        host,
        image: image?.name ?? null,
        createdAt: now,
        updatedAt: now,
      };
      const ok = await this.o.store.txn({
        expect: [
          { key: `vm-names/${vm.name}`, rev: '0' },
          { key: `vms/${vm.id}`, rev: '0' },
        ],
        put: [
          { key: `vm-names/${vm.name}`, value: vm.id },
          { key: `vms/${vm.id}`, value: vm },
          ...disks.map((d) => ({ key: `disks/${d.id}`, value: d })),
        ],
      });
      if (!ok)
        throw new FdError('FD_VM_EXISTS', `a VM named ${vm.name} already exists`, {
          hint: 'choose another name',
          status: 409,
        });
      t.log(`VM ${vm.name} created (${vm.id})`);
      return vm;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      await this.releaseIps(id);
      throw err;
    }
  }

  /** A fixed address for a NIC on a cluster (VXLAN) network; null on other networks. */
  private async allocateIp(network: string, vmId: string): Promise<string | null> {
    const net = (await this.o.store.get<NetworkRecord>(`networks/${network}`))?.value;
    if (!net || net.kind !== 'vxlan' || !net.cidr) return null;
    const { base, size } = cidrRange(net.cidr);
    // .1-.99 are hosts' own addresses on the segment; VMs get .100 and up.
    for (let i = 100; i < size - 1; i++) {
      const ip = intToIp(base + i);
      if (await this.o.store.create(`netips/${network}/${ip}`, { vmId })) return ip;
    }
    throw new FdError('FD_NET_FULL', `network ${network} has no free address`, {
      hint: 'delete VMs on it, or use a larger subnet',
    });
  }

  private async releaseIps(vmId: string): Promise<void> {
    for (const r of await this.o.store.list<{ vmId: string }>('netips/')) {
      if (r.value.vmId === vmId) await this.o.store.remove(r.key);
    }
  }

  /**
   * Brings this host's side of every cluster (VXLAN) network up to date: its bridge address
   * (a slot of its own), the VXLAN flood list (every other host) and the DHCP bindings (every
   * VM on the network, wherever it runs). Called at start and when hosts or VMs change.
   */
  async refreshClusterNetworks(): Promise<void> {
    const all = (await this.o.store.list<NetworkRecord>('networks/')).map((x) => x.value);
    // A network deleted from the cluster goes from this host too.
    for (const local of await this.networks.list()) {
      if (!all.some((n) => n.name === local.name)) await this.networks.remove(local.name);
    }
    const nets = all.filter((n) => n.kind === 'vxlan');
    if (!nets.length) return;
    const hosts = (await this.o.store.list<HostRecord>('hosts/')).map((h) => h.value);
    const me = hosts.find((h) => h.name === this.o.hostName);
    if (!me) return;
    const addrOf = (h: HostRecord): string => new URL(h.apiUrl).hostname.replace(/^\[|\]$/g, '');
    const vms = (await this.o.store.list<VmRecord>('vms/')).map((v) => v.value);
    for (const n of nets) {
      const slot = await this.hostSlot(n.name);
      const leases = vms.flatMap((v) =>
        v.nics.filter((x) => x.network === n.name && x.ip).map((x) => ({ mac: x.mac, ip: x.ip! })),
      );
      await this.networks.ensure({
        name: n.name,
        bridge: n.bridge!,
        subnet: n.cidr!,
        address: intToIp(cidrRange(n.cidr!).base + slot),
        nat: true,
        dhcp: true,
        staticLeases: leases,
        vxlan: { vni: n.vni!, local: addrOf(me), peers: hosts.filter((h) => h.name !== me.name).map(addrOf) },
      });
      // ensure() leaves a running dnsmasq alone: make it reread the bindings.
      await this.networks.setStaticLeases(n.name, leases);
    }
  }

  /** This host's address slot (1-99) on a cluster network, taken once by compare-and-swap. */
  private async hostSlot(network: string): Promise<number> {
    const mine = await this.o.store.get<number>(`netslots/${network}/${this.o.hostName}`);
    if (mine) return mine.value;
    for (let slot = 1; slot < 100; slot++) {
      if (await this.o.store.create(`netslot-used/${network}/${slot}`, this.o.hostName)) {
        await this.o.store.put(`netslots/${network}/${this.o.hostName}`, slot);
        return slot;
      }
    }
    throw new FdError('FD_NET_FULL', `network ${network} has no free host address`);
  }

  private async buildSeedIso(dir: string, spec: VmCreateSpec): Promise<string> {
    const ci = spec.cloudInit!;
    const src = await mkdtemp(join(dir, 'seed-'));
    const hostname = ci.hostname ?? spec.name;
    const userData =
      ci.userData ??
      [
        '#cloud-config',
        `hostname: ${hostname}`,
        ...(ci.user
          ? [
              'users:',
              `  - name: ${ci.user}`,
              '    sudo: ALL=(ALL) NOPASSWD:ALL',
              '    shell: /bin/bash',
              ...(ci.sshKey ? ['    ssh_authorized_keys:', `      - ${ci.sshKey}`] : []),
            ]
          : ci.sshKey
            ? ['ssh_authorized_keys:', `  - ${ci.sshKey}`]
            : []),
        ...(ci.password ? [`password: ${ci.password}`, 'chpasswd: { expire: false }', 'ssh_pwauth: true'] : []),
        '',
      ].join('\n');
    await writeFile(join(src, 'user-data'), userData);
    await writeFile(join(src, 'meta-data'), `instance-id: ${spec.name}-${Date.now()}\nlocal-hostname: ${hostname}\n`);
    const iso = join(dir, 'seed.iso');
    await run('genisoimage', [
      '-quiet',
      '-output',
      iso,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      join(src, 'user-data'),
      join(src, 'meta-data'),
    ]);
    await rm(src, { recursive: true, force: true });
    return iso;
  }

  /** The disks a migration target receives: a child of the same base image when this host has it. */
  async prepareMigrationDisks(
    vmId: string,
    disks: { id: string; sizeBytes: number; baseImage: string | null }[],
    /** Where the copies go: the VM's directory (migration) or a standby's mirror directory. */
    dir = join(this.poolDir, 'vms', vmId),
  ): Promise<{ paths: Record<string, string>; sync: Record<string, 'top' | 'full'> }> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const paths: Record<string, string> = {};
    const sync: Record<string, 'top' | 'full'> = {};
    for (const d of disks) {
      const path = join(dir, `${d.id}.vhd`);
      const base = d.baseImage ? await this.o.store.get<ImageRecord>(`images/${d.baseImage}`) : undefined;
      if (
        base &&
        (await stat(base.value.path).then(
          () => true,
          () => false,
        ))
      ) {
        await createDifferencingVhd(path, base.value.path);
        if (d.sizeBytes > base.value.sizeBytes) await resizeVhd(path, d.sizeBytes);
        sync[d.id] = 'top';
      } else {
        await createVhd(path, { sizeBytes: d.sizeBytes, type: 'dynamic' });
        sync[d.id] = 'full';
      }
      paths[d.id] = path;
    }
    return { paths, sync };
  }

  migrationDiskPath(vmId: string, diskId: string): string {
    return join(this.poolDir, 'vms', vmId, `${diskId}.vhd`);
  }

  async removeVmDir(vmId: string): Promise<void> {
    await rm(join(this.poolDir, 'vms', vmId), { recursive: true, force: true });
  }

  async removeVmDisks(vm: VmRecord, t: TaskHandle): Promise<void> {
    await this.releaseIps(vm.id);
    for (const d of vm.disks) {
      const rec = await this.o.store.get<DiskRecord>(`disks/${d.diskId}`);
      if (rec) await this.o.store.remove(`disks/${d.diskId}`);
    }
    await rm(join(this.poolDir, 'vms', vm.id), { recursive: true, force: true });
    t.log('disks removed');
  }

  /** `probes`: VMs of the image boot with the console probes on (tests, benchmarks). */
  async buildTinyImage(host: string, force: boolean, t: TaskHandle, probes = false): Promise<ImageRecord> {
    t.log('building the tiny image from Debian packages (cached after the first build)');
    const img = await buildTinyImage({ force, onProgress: (p) => t.progress(p) });
    return this.registerTiny(probes ? withProbes(img) : img, host);
  }

  /** Copies a built tiny image into the data dir under its content key and records it. */
  async registerTiny(
    img: { key: string; disk: string; kernel: string; initrd: string; cmdline: string; diskSizeBytes: number },
    host: string,
  ): Promise<ImageRecord> {
    const base = join(this.imagesDir, `tiny-${img.key.slice(0, 12)}`);
    const disk = `${base}.vhd`;
    const existing = await this.o.store.get<ImageRecord>('images/tiny');
    if (existing?.value.path === disk && existing.value.cmdline === img.cmdline) return existing.value;
    await mkdir(this.imagesDir, { recursive: true });
    for (const [from, to] of [
      [img.disk, disk],
      [img.kernel, `${base}.vmlinuz`],
      [img.initrd, `${base}.initrd`],
    ] as const) {
      await produceFileAtomic(to, (tmp) => copyPrivate(from, tmp));
    }
    const rec: ImageRecord = {
      name: 'tiny',
      kind: 'disk',
      path: disk,
      format: 'vhd',
      sizeBytes: img.diskSizeBytes,
      kernel: `${base}.vmlinuz`,
      initrd: `${base}.initrd`,
      cmdline: img.cmdline,
      host,
      createdAt: new Date().toISOString(),
    };
    await this.o.store.put('images/tiny', rec);
    return rec;
  }

  /**
   * Imports `file` as image NAME: a path import reads only from the host's import directories,
   * an upload only its own spool file (see host/import-paths.ts).
   */
  async importImage(
    name: string,
    file: string,
    host: string,
    t: TaskHandle,
    opts: { upload?: boolean } = {},
  ): Promise<ImageRecord> {
    const dirs = opts.upload ? [join(this.imagesDir, '.uploads')] : await importDirs(this.o.dataDir);
    const src = await openImportSource(file, dirs, { notFound: 'FD_IMAGE_FILE_NOT_FOUND' });
    let made;
    try {
      made = await importImageFile(src, opts.upload ? `the upload of ${name}` : file, this.imagesDir, name, {
        log: (m) => t.log(m),
        onProgress: (p) => t.progress(p),
        signal: t.signal,
      });
    } finally {
      await src.close();
    }
    const rec: ImageRecord = {
      name,
      ...made,
      kernel: null,
      initrd: null,
      cmdline: null,
      host,
      createdAt: new Date().toISOString(),
    };
    if (!(await this.o.store.create(`images/${name}`, rec))) {
      await rm(rec.path, { force: true });
      throw new FdError('FD_IMAGE_EXISTS', `an image named ${name} exists`, { hint: 'choose another name' });
    }
    return rec;
  }

  async deleteImage(name: string): Promise<ImageRecord> {
    const img = await this.o.catalog.getImage(name);
    const users = (await this.o.store.list<VmRecord>('vms/')).filter(
      (v) => v.value.image === name || v.value.kernelImage === name || v.value.cdroms.some((c) => c.image === name),
    );
    if (users.length) {
      throw new FdError('FD_IMAGE_BUSY', `image ${name} is used by ${users.map((u) => u.value.name).join(', ')}`, {
        hint: 'delete those VMs first',
        status: 409,
      });
    }
    await this.o.store.remove(`images/${name}`);
    for (const p of [img.path, img.kernel, img.initrd])
      if (p && p.startsWith(this.imagesDir)) await rm(p, { force: true });
    return img;
  }

  async diskInfo(id: string): Promise<unknown> {
    const d = await this.o.catalog.getDisk(id);
    return { ...d, engine: await diskInfo(d.path) };
  }

  async resizeDisk(id: string, sizeBytes: number, t: TaskHandle): Promise<DiskRecord> {
    const d = await this.o.catalog.getDisk(id);
    if (d.vmId) {
      const st = await this.o.store.get<{ state: string }>(`status/vms/${d.vmId}`);
      if (st && st.value.state !== 'stopped' && st.value.state !== 'crashed') {
        throw new FdError('FD_VM_RUNNING', 'stop the VM before resizing its disk', { status: 409 });
      }
    }
    if (sizeBytes < d.sizeBytes)
      throw new FdError('FD_DISK_SHRINK', 'disks only grow', { hint: `give a size of at least ${d.sizeBytes} bytes` });
    t.log(`growing ${d.name} to ${sizeBytes} bytes`);
    await resizeVhd(d.path, sizeBytes);
    const res = await this.o.store.mutate<DiskRecord>(`disks/${d.id}`, (cur) => ({ ...cur, sizeBytes }));
    return res.value;
  }

  freeMemory(): number {
    return freemem();
  }
}

function cidrRange(cidr: string): { base: number; size: number } {
  const [addr, bits] = cidr.split('/');
  const p = addr!.split('.').map(Number);
  const prefix = Number(bits);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const base = ((((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0) & mask) >>> 0;
  return { base, size: 2 ** (32 - prefix) };
}

const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
