/**
 * `ovf export` on a host: stopped VMs (one, several, or an imported group) become one OVA. Each
 * VM disk chain is read through our VHD engine into a streamOptimized VMDK (or a flat dynamic
 * VHD), the descriptor is written by the OVF library (with flightdeck's fd:Config settings
 * added) and checked against the DMTF schema, and the OVA is packed in canonical order with a
 * SHA256 manifest into a temp file renamed into place. The VMs stay locked against power
 * actions while their disks are read.
 */
import { access, mkdtemp, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';
import { Progress } from '../core/progress.js';
import { convertDisk } from '../disk/convert.js';
import { openDisk } from '../disk/open.js';
import { writeStreamOptimizedVmdk } from '../disk/vmdk/stream-writer.js';
import type { OvfCollection, OvfDisk, OvfFile, OvfVirtualSystem } from '../ovf/model.js';
import { writeOva, type OvaMemberSource } from '../ovf/ova-writer.js';
import { validateSchema } from '../ovf/schema.js';
import { writeOvf } from '../ovf/writer.js';
import type { DiskRecord, VmRecord } from '../cluster/state/model.js';
import type { TaskHandle } from '../cluster/state/tasks.js';
import { addFdConfig } from './fd-config.js';
import { getGroup, type GroupRecord } from './group.js';
import { vmName, type ApplianceHost } from './import.js';

export interface ExportRequest {
  refs: string[];
  out: string;
  ovfVersion: 1 | 2;
  diskFormat: 'vmdk' | 'vhd';
}

export interface ExportPlan {
  req: ExportRequest;
  vms: VmRecord[];
  group: GroupRecord | undefined;
  /** Base name of the descriptor and disk members. */
  base: string;
}

export interface ExportResult {
  path: string;
  sizeBytes: number;
  ovfVersion: 1 | 2;
  diskFormat: 'vmdk' | 'vhd';
  vms: string[];
  members: { name: string; sizeBytes: number; sha256: string }[];
}

const STOPPED = new Set(['stopped', 'crashed']);

async function assertStopped(host: ApplianceHost, vm: VmRecord): Promise<void> {
  const st = host.state.vms.status(vm.id);
  if (vm.desired === 'running' || (st && !STOPPED.has(st.state)))
    throw new FdError('FD_VM_RUNNING', `VM ${vm.name} is ${st?.state ?? 'meant to run'}; export needs it stopped`, {
      hint: `stop it first: flightdeck vm shutdown ${vm.name}`,
      status: 409,
    });
}

/** Resolves VM names, ids and group names to records, and checks the output path. */
export async function planExport(host: ApplianceHost, req: ExportRequest): Promise<ExportPlan> {
  if (!isAbsolute(req.out))
    throw new FdError('FD_BAD_PATH', `"${req.out}" is not an absolute path`, {
      hint: "give the full path of the .ova to write on the daemon's host",
    });
  if (!req.out.toLowerCase().endsWith('.ova'))
    throw new FdError('FD_BAD_PATH', `${req.out} does not end in .ova`, { hint: 'name the output FILE.ova' });
  try {
    await access(req.out);
    throw new FdError('FD_FILE_EXISTS', `${req.out} already exists`, {
      hint: 'remove it or choose another --out',
      status: 409,
    });
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  try {
    if (!(await stat(dirname(req.out))).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new FdError('FD_BAD_PATH', `${dirname(req.out)} is not a directory`, {
      hint: 'create the directory first',
      cause: err,
    });
  }
  if (req.refs.length === 0)
    throw new FdError('FD_BAD_REQUEST', 'name at least one VM (or a group)', {
      hint: 'flightdeck ovf export VM --out F.ova',
    });
  const out: VmRecord[] = [];
  let group: GroupRecord | undefined;
  for (const ref of req.refs) {
    let found: VmRecord[];
    try {
      found = [(await host.state.vms.find(ref)).value];
    } catch (err) {
      if (!(err instanceof FdError) || err.code !== 'FD_VM_NOT_FOUND') throw err;
      const g = await getGroup(host.store, ref);
      if (!g) throw err;
      group = g;
      found = [];
      for (const m of [...g.members].sort((a, b) => a.order - b.order))
        found.push((await host.state.vms.find(m.vmId)).value);
    }
    for (const vm of found) if (!out.some((x) => x.id === vm.id)) out.push(vm);
  }
  const hosts = new Set(out.map((v) => v.host));
  if (hosts.size > 1)
    throw new FdError('FD_OVF_EXPORT_SPANS_HOSTS', `the VMs live on several hosts (${[...hosts].join(', ')})`, {
      hint: 'export the VMs of each host separately',
    });
  for (const vm of out) await assertStopped(host, vm);
  // A group is written as its collection only when exactly its VMs are exported.
  if (group && !(group.members.length === out.length && group.members.every((m) => out.some((v) => v.id === m.vmId))))
    group = undefined;
  return { req, vms: out, group, base: vmName(basename(req.out).replace(/\.ova$/i, '')) };
}

/** Runs with the VMs locked against power actions (the caller holds their locks). */
export async function runExport(host: ApplianceHost, plan: ExportPlan, t: TaskHandle): Promise<ExportResult> {
  const { req, base } = plan;
  for (const vm of plan.vms) await assertStopped(host, vm);
  const records = new Map<string, DiskRecord>();
  for (const vm of plan.vms) {
    for (const d of vm.disks) {
      const rec = host.state.catalog.findDisk(d.diskId);
      if (!rec) throw new Error(`disk record ${d.diskId} of VM ${vm.name} is missing`);
      records.set(d.diskId, rec);
    }
  }
  const total = [...records.values()].reduce((a, r) => a + r.sizeBytes, 0);
  const progress = new Progress(Math.max(1, total), (p) => t.progress(p));
  let before = 0;
  const work = await mkdtemp(join(dirname(req.out), `.${base}.export-`));
  try {
    const files: OvfFile[] = [];
    const disks: OvfDisk[] = [];
    const sources: OvaMemberSource[] = [];
    const systems: OvfVirtualSystem[] = [];
    for (const vm of plan.vms) {
      const vs = systemOf(vm);
      for (const [i, d] of vm.disks.entries()) {
        const rec = records.get(d.diskId)!;
        const diskId = vs.disks[i]!.diskId!;
        const href = `${base}-${vm.name}-disk${i}.${req.diskFormat}`;
        const path = join(work, href);
        t.log(
          `${vm.name}: writing disk${i} as ${req.diskFormat === 'vmdk' ? 'a streamOptimized VMDK' : 'a dynamic VHD'}`,
        );
        let capacityBytes: number;
        let sha256: string | undefined;
        if (req.diskFormat === 'vmdk') {
          const dev = await openDisk(rec.path);
          try {
            const res = await writeStreamOptimizedVmdk(dev, path, {
              signal: t.signal,
              onProgress: (done) => progress.report(before + done),
            });
            capacityBytes = res.capacityBytes;
            sha256 = res.sha256;
          } finally {
            await dev.close();
          }
        } else {
          const res = await convertDisk(rec.path, path, {
            to: 'vhd',
            signal: t.signal,
            onProgress: (p) => progress.report(before + p.done),
          });
          capacityBytes = res.sizeBytes;
        }
        before += rec.sizeBytes;
        const fileId = `file${files.length + 1}`;
        files.push({ id: fileId, href, sizeBytes: (await stat(path)).size });
        disks.push({
          diskId,
          capacityBytes,
          fileRef: fileId,
          formatKind: req.diskFormat === 'vmdk' ? 'vmdk-streamOptimized' : 'vhd',
        });
        sources.push({ name: href, path, ...(sha256 ? { sha256 } : {}) });
      }
      systems.push(vs);
    }
    const entity: OvfVirtualSystem | OvfCollection =
      systems.length === 1 && !plan.group
        ? systems[0]!
        : {
            kind: 'VirtualSystemCollection',
            // ovf:id values are unique in a descriptor: a collection named like a member is renamed.
            id: collectionId(plan.group?.name ?? base, plan.vms),
            name: plan.group?.collection ?? base,
            info: 'VMs exported together by flightdeck',
            startup: (plan.group?.members ?? []).map((m) => ({
              id: plan.vms.find((v) => v.id === m.vmId)!.name,
              order: m.order,
              startDelayS: m.startDelayS,
              stopDelayS: m.stopDelayS,
              waitingForGuest: m.waitingForGuest,
            })),
            products: [],
            eulas: [],
            members: systems,
            extensions: [],
          };
    const networks = [...new Set(plan.vms.flatMap((v) => v.nics.map((n) => n.network)))].map((name) => ({ name }));
    const descriptor = addFdConfig(
      writeOvf({ files, disks, networks, configurations: [], entity }, { ovfVersion: req.ovfVersion }),
      plan.vms.map((vm): Record<string, string> => (vm.kernelImage ? { kernelImage: vm.kernelImage } : {})),
    );
    if (req.ovfVersion === 1) {
      const check = await validateSchema(descriptor, '1.x', `${base}.ovf`);
      if (check.errors.length)
        throw new Error(`the exported descriptor fails the DMTF schema: ${check.errors.join('; ')}`);
      t.log(`descriptor valid against ${basename(check.schema ?? 'the DMTF schema')}`);
    }
    t.log(`packing ${req.out}`);
    const res = await writeOva(req.out, { descriptorName: `${base}.ovf`, descriptor, files: sources });
    return {
      path: res.path,
      sizeBytes: res.sizeBytes,
      ovfVersion: req.ovfVersion,
      diskFormat: req.diskFormat,
      vms: plan.vms.map((v) => v.name),
      members: res.members,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function collectionId(want: string, vms: VmRecord[]): string {
  return vms.some((v) => v.name === want) ? `${want}-collection` : want;
}

/** A VM record as an OVF virtual system (hardware only; disks get their files later). */
function systemOf(vm: VmRecord): OvfVirtualSystem {
  const drives = vm.cdroms.filter((c) => c.id !== 'ovfenv');
  return {
    kind: 'VirtualSystem',
    id: vm.name,
    name: vm.name,
    info: 'A virtual machine exported by flightdeck',
    vcpus: vm.cpus,
    memoryBytes: vm.memoryBytes,
    controllers: [
      ...(vm.disks.length ? [{ instanceId: 'scsi0', kind: 'scsi' as const, subtype: 'lsilogic', address: '0' }] : []),
      ...(drives.length ? [{ instanceId: 'ide0', kind: 'ide' as const, address: '0' }] : []),
    ],
    disks: vm.disks.map((_, i) => ({
      instanceId: `disk${i}`,
      name: `disk${i}`,
      diskId: `${vm.name}-disk${i}`,
      controllerId: 'scsi0',
      addressOnParent: String(i),
    })),
    // Media are not exported: an ISO is an image of this host, the OVF environment is rebuilt
    // on import. The drives themselves are kept, empty.
    drives: drives.map((c, i) => ({
      instanceId: `cd${i}`,
      kind: 'cdrom' as const,
      name: c.id,
      controllerId: 'ide0',
      addressOnParent: String(i),
    })),
    // E1000 is the adapter every importer knows; flightdeck itself always attaches virtio-net.
    nics: vm.nics.map((n, i) => ({
      instanceId: `nic${i}`,
      name: n.id,
      network: n.network,
      adapterType: 'E1000',
      mac: n.mac,
      addressOnParent: String(i + 1),
      connected: true,
    })),
    devices: [],
    products: [],
    eulas: [],
    extensions: [],
  };
}
