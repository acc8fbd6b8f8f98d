/**
 * `ovf import` on a host: an .ova or .ovf becomes one VM per virtual system. `planImport` checks
 * everything that can be checked from the descriptor (EULA, deployment option, property values,
 * names, hardware) before any task exists; `runImport` streams the package once, converting each
 * disk to a dynamic VHD in the VM's pool directory as it is read (and checked against the
 * manifest), builds the OVF environment ISO, and only then writes every record in one
 * transaction. A failure at any point removes the directories: nothing half-imported remains.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { totalmem } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { produceFileAtomic } from '../core/atomic-file.js';
import { FdError } from '../core/errors.js';
import { macFromSeed, NAME_RE, newUuid } from '../core/ids.js';
import { run } from '../core/process.js';
import { Progress } from '../core/progress.js';
import { createVhd } from '../disk/vhd/create.js';
import { TINY_MIN_MEMORY_BYTES } from '../host/images/tiny.js';
import { ovfEnvironment, resolveProperties, type ResolvedProperty } from '../ovf/environment.js';
import { importDiskToVhd } from '../ovf/import-disk.js';
import { hasEula, type OvfCollection, type OvfDisk, type OvfEntity, type OvfVirtualSystem } from '../ovf/model.js';
import { readPackage, type PackageFile, type PackageReport } from '../ovf/package.js';
import { MIN_MEMORY_BYTES, VmRecord, type DiskRecord, type ImageRecord } from '../cluster/state/model.js';
import type { KvStore } from '../cluster/state/kv.js';
import type { State } from '../cluster/state/state.js';
import type { TaskHandle } from '../cluster/state/tasks.js';
import { fdConfigOf, vmwFirmware } from './fd-config.js';
import { groupExists, groupKey, type GroupRecord } from './group.js';
import { copyPrivate } from '../host/private-files.js';

export interface ApplianceHost {
  store: KvStore;
  state: State;
  hostName: string;
  /** The default pool's directory of per-VM directories. */
  vmsDir: string;
}

export interface ImportRequest {
  file: string;
  name?: string | undefined;
  acceptEula: boolean;
  /** KEY=VALUE pairs as given on the command line. */
  props: string[];
  deployment?: string | undefined;
}

interface PlannedDisk {
  path: string;
  /** DiskSection entry, or a capacity for a blank disk the item sized itself. */
  disk?: OvfDisk;
  blankBytes?: number;
}

interface PlannedVm {
  vs: OvfVirtualSystem;
  /** Collections around the system, outermost first. */
  up: OvfCollection[];
  id: string;
  name: string;
  dir: string;
  cpus: number;
  memoryBytes: number;
  firmware: 'bios' | 'uefi';
  kernelImage: string | null;
  disks: PlannedDisk[];
  cdroms: VmRecord['cdroms'];
  isoFiles: { fileRef: string; path: string }[];
  nics: number;
  env: ResolvedProperty[] | undefined;
  startup: { order: number; startDelayS: number; stopDelayS: number; waitingForGuest: boolean };
}

export interface ImportPlan {
  req: ImportRequest;
  report: PackageReport;
  vms: PlannedVm[];
  group: { name: string; collection: OvfCollection } | undefined;
  notes: string[];
}

export interface ImportResult {
  vms: { id: string; name: string; cpus: number; memoryBytes: number; disks: number; nics: number }[];
  group: string | null;
  properties: Record<string, string>;
  warnings: string[];
}

const DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024;

/** A VM name from anything an appliance calls its systems. */
export function vmName(s: string): string {
  const n = s
    .replace(/[^a-zA-Z0-9._-]+/g, '-')
    .replace(/^[^a-zA-Z0-9]+/, '')
    .slice(0, 63)
    .replace(/[-.]+$/, '');
  return n || 'vm';
}

/** "k=v" pairs to a map; a pair without "=" is refused. */
function parseProps(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0)
      throw new FdError('FD_OVF_BAD_PROPERTY', `--prop "${p}" is not KEY=VALUE`, { hint: 'write --prop key=value' });
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

/** Each system with the collections around it, outermost first. */
function systemsWithAncestors(e: OvfEntity, up: OvfCollection[] = []): { vs: OvfVirtualSystem; up: OvfCollection[] }[] {
  return e.kind === 'VirtualSystem' ? [{ vs: e, up }] : e.members.flatMap((m) => systemsWithAncestors(m, [...up, e]));
}

/** The StartupSection item that places `vs` (or the nested collection holding it), nearest first. */
function startupOf(vs: OvfVirtualSystem, up: OvfCollection[]): PlannedVm['startup'] {
  const path = [...up.map((c) => c.id), vs.id];
  for (let i = up.length - 1; i >= 0; i--) {
    const item = up[i]!.startup.find((s) => s.id === path[i + 1]);
    if (item)
      return {
        order: item.order,
        startDelayS: item.startDelayS,
        stopDelayS: item.stopDelayS,
        waitingForGuest: item.waitingForGuest,
      };
  }
  return { order: 0, startDelayS: 0, stopDelayS: 0, waitingForGuest: false };
}

/**
 * Splits the user's values among the entities that declare them and resolves each entity's
 * environment; keys no entity declares are refused, all at once.
 */
function resolveAll(
  systems: { vs: OvfVirtualSystem; up: OvfCollection[] }[],
  given: Record<string, string>,
): Map<OvfVirtualSystem, ResolvedProperty[]> {
  const entities = new Set<OvfEntity>();
  for (const s of systems) for (const e of [...s.up, s.vs]) entities.add(e);
  const owns = (e: OvfEntity, k: string): boolean =>
    e.products.some((p) => p.properties.some((x) => x.key === k || x.fullKey === k));
  const unknown = Object.keys(given).filter((k) => ![...entities].some((e) => owns(e, k)));
  if (unknown.length) {
    const known = [...entities].flatMap((e) => e.products.flatMap((p) => p.properties.map((x) => x.key)));
    throw new FdError(
      'FD_OVF_BAD_PROPERTY',
      `the appliance has no propert${unknown.length > 1 ? 'ies' : 'y'} ${unknown.join(', ')}`,
      {
        hint: known.length ? `its properties: ${known.join(', ')}` : 'this appliance declares no properties',
        details: unknown.map((k) => `${k} is not a property of this appliance`),
      },
    );
  }
  const resolved = new Map<OvfEntity, ResolvedProperty[]>();
  const problems: string[] = [];
  for (const e of entities) {
    const mine = Object.fromEntries(Object.entries(given).filter(([k]) => owns(e, k)));
    try {
      resolved.set(e, resolveProperties(e, mine));
    } catch (err) {
      if (!(err instanceof FdError) || err.code !== 'FD_OVF_BAD_PROPERTY') throw err;
      problems.push(...(Array.isArray(err.details) ? (err.details as string[]) : [err.message]));
    }
  }
  if (problems.length)
    throw new FdError('FD_OVF_BAD_PROPERTY', `property values are not accepted: ${problems.join('; ')}`, {
      hint: 'see `flightdeck ovf inspect FILE` for each property, its type and its limits',
      details: problems,
    });
  return new Map(systems.map((s) => [s.vs, [...s.up, s.vs].flatMap((e) => resolved.get(e) ?? [])]));
}

export async function planImport(host: ApplianceHost, req: ImportRequest): Promise<ImportPlan> {
  if (!isAbsolute(req.file))
    throw new FdError('FD_BAD_PATH', `"${req.file}" is not an absolute path`, {
      hint: "give the full path of the .ova or .ovf on the daemon's host",
    });
  if (req.name !== undefined && !NAME_RE.test(req.name))
    throw new FdError('FD_BAD_REQUEST', `--name "${req.name}" is not a valid name`, {
      hint: 'use 1-63 letters, digits, ".", "_" or "-"',
    });
  const given = parseProps(req.props);
  const report = await readPackage(req.file, {
    descriptorOnly: true,
    confined: true,
    ...(req.deployment !== undefined ? { configuration: req.deployment } : {}),
    properties: given,
  });
  const env = report.envelope;
  if (env.problems.length) {
    throw new FdError(
      env.problems[0]!.code,
      `${req.file} cannot be imported: ${env.problems.map((p) => p.message).join('; ')}`,
      { hint: 'run `flightdeck ovf validate FILE` for every problem', details: env.problems },
    );
  }
  if (hasEula(env) && !req.acceptEula) {
    const eulas: string[] = [];
    const walk = (e: OvfEntity): void => {
      eulas.push(...e.eulas);
      if (e.kind === 'VirtualSystemCollection') e.members.forEach(walk);
    };
    walk(env.entity);
    throw new FdError('FD_OVF_EULA_NOT_ACCEPTED', `${req.file} comes with a license agreement that must be accepted`, {
      hint: `read it (here in "details", or with \`flightdeck ovf inspect ${req.file}\`), then import again with --accept-eula`,
      details: { eulas },
      status: 403,
    });
  }

  const systems = systemsWithAncestors(env.entity);
  const envs = resolveAll(systems, given);
  const notes = [...env.warnings];
  const group =
    env.entity.kind === 'VirtualSystemCollection'
      ? { name: req.name ?? vmName(env.entity.name), collection: env.entity }
      : undefined;
  const used = new Set<string>();
  const images = new Map<string, ImageRecord | undefined>();
  const vms: PlannedVm[] = [];
  for (const { vs, up } of systems) {
    let name = group ? vmName(`${group.name}-${vmName(vs.name)}`) : (req.name ?? vmName(vs.name));
    for (let i = 2; used.has(name); i++) name = vmName(`${name.slice(0, 58)}-${i}`);
    used.add(name);
    const id = newUuid();
    const dir = join(host.vmsDir, id);
    const label = `${vs.name} (${name})`;

    const fd = fdConfigOf(vs);
    let kernelImage: string | null = null;
    if (fd['kernelImage']) {
      if (!images.has(fd['kernelImage']))
        images.set(fd['kernelImage'], host.state.catalog.findImage(fd['kernelImage']));
      const img = images.get(fd['kernelImage']);
      if (img?.kernel) kernelImage = img.name;
      else
        notes.push(`${label}: boots the kernel of image ${fd['kernelImage']}, which this host lacks; boots from disk`);
    }
    if (vs.vcpus !== undefined && vs.vcpus > 64)
      throw new FdError('FD_OVF_UNSUPPORTED_DEVICE', `${label}: ${vs.vcpus} virtual CPUs; flightdeck runs at most 64`);
    let memoryBytes = vs.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    if (vs.memoryBytes === undefined) notes.push(`${label}: no memory item; given ${DEFAULT_MEMORY_BYTES} bytes`);
    const floor = kernelImage ? TINY_MIN_MEMORY_BYTES : MIN_MEMORY_BYTES;
    if (memoryBytes < floor) {
      notes.push(`${label}: memory raised from ${memoryBytes} to ${floor} bytes`);
      memoryBytes = floor;
    }
    if (memoryBytes > totalmem())
      throw new FdError('FD_VM_SPEC_INVALID', `${label}: ${memoryBytes} bytes of memory is more than this host has`, {
        hint: 'pick a smaller --deployment option if the appliance has one',
      });

    const disks: PlannedDisk[] = [];
    for (const d of vs.disks) {
      const path = join(dir, `disk${disks.length}.vhd`);
      if (d.diskId) {
        const disk = env.disks.find((x) => x.diskId === d.diskId)!;
        if (disk.parentRef)
          throw new FdError(
            'FD_OVF_UNSUPPORTED_DEVICE',
            `${label}: disk ${disk.diskId} is a delta of ${disk.parentRef}`,
            {
              hint: 'flatten the appliance with its producer first',
            },
          );
        disks.push({ path, disk });
      } else if (d.capacityBytes !== undefined) disks.push({ path, blankBytes: d.capacityBytes });
      else notes.push(`${label}: disk item ${d.instanceId} has neither a disk nor a size; skipped`);
    }
    if (vs.controllers.some((c) => c.kind !== 'usb') && disks.length)
      notes.push(
        `${label}: disks attached as virtio-blk (the appliance names ${[...new Set(vs.controllers.map((c) => c.kind))].join(', ')})`,
      );
    const cdroms: VmRecord['cdroms'] = [];
    const isoFiles: PlannedVm['isoFiles'] = [];
    for (const dr of vs.drives) {
      if (dr.kind === 'floppy') {
        notes.push(`${label}: floppy drive skipped (not supported)`);
        continue;
      }
      const cd = `cd${cdroms.length}`;
      const path = dr.fileRef ? join(dir, `${cd}.iso`) : null;
      if (dr.fileRef && path) isoFiles.push({ fileRef: dr.fileRef, path });
      cdroms.push({ id: cd, image: null, path, bus: 'sata' });
    }
    const values = envs.get(vs) ?? [];
    const wantsEnv = values.length > 0 || (vs.transport ?? []).includes('iso');
    if (vs.transport?.length && !vs.transport.includes('iso'))
      notes.push(`${label}: asks for transport ${vs.transport.join(' ')}; the environment comes on an ISO instead`);
    if (wantsEnv) cdroms.push({ id: 'ovfenv', image: null, path: join(dir, 'ovf-env.iso'), bus: 'scsi' });
    const nets = new Set(vs.nics.map((n) => n.network).filter((n): n is string => !!n));
    if (nets.size) notes.push(`${label}: NICs on ${[...nets].join(', ')} plugged into network "default"`);
    vms.push({
      vs,
      up,
      id,
      name,
      dir,
      cpus: Math.max(1, vs.vcpus ?? 1),
      memoryBytes,
      firmware: vmwFirmware(vs) ?? 'bios',
      kernelImage,
      disks,
      cdroms,
      isoFiles,
      nics: vs.nics.length,
      env: wantsEnv ? values : undefined,
      startup: startupOf(vs, up),
    });
  }
  for (const vm of vms) {
    if (host.state.vms.nameTaken(vm.name))
      throw new FdError('FD_VM_EXISTS', `a VM named ${vm.name} already exists`, {
        hint: 'import under another --name',
      });
  }
  if (group && (await host.store.get(groupKey(group.name)))) throw groupExists(group.name);
  return { req, report, vms, group, notes };
}

/** Counts bytes as a packaged file is read (for the task's progress). */
function counted(pf: PackageFile, onBytes: (n: number) => void): PackageFile {
  const body = (async function* () {
    for await (const c of pf.body) {
      onBytes(c.length);
      yield c;
    }
  })();
  return { ...pf, body };
}

async function buildEnvIso(vm: PlannedVm): Promise<string> {
  const src = await mkdtemp(join(vm.dir, 'ovfenv-'));
  try {
    await writeFile(join(src, 'ovf-env.xml'), ovfEnvironment(vm.vs.id, vm.env ?? []));
    const iso = join(vm.dir, 'ovf-env.iso');
    await produceFileAtomic(iso, (tmp) =>
      run('genisoimage', ['-quiet', '-output', tmp, '-volid', 'OVF ENV', '-joliet', '-rock', join(src, 'ovf-env.xml')]),
    );
    return iso;
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

export async function runImport(host: ApplianceHost, plan: ImportPlan, t: TaskHandle): Promise<ImportResult> {
  const { req, vms } = plan;
  const env = plan.report.envelope;
  for (const n of plan.notes) t.log(n);
  const sizes = new Map<string, number>();
  try {
    for (const vm of vms) await mkdir(vm.dir, { recursive: true });
    // Every place a packaged file goes: disks (converted), ISOs (copied as they are).
    const targets = new Map<string, ({ kind: 'disk'; d: PlannedDisk } | { kind: 'iso'; path: string })[]>();
    const add = (ref: string, x: { kind: 'disk'; d: PlannedDisk } | { kind: 'iso'; path: string }): void => {
      targets.set(ref, [...(targets.get(ref) ?? []), x]);
    };
    for (const vm of vms) {
      for (const d of vm.disks) if (d.disk?.fileRef) add(d.disk.fileRef, { kind: 'disk', d });
      for (const f of vm.isoFiles) add(f.fileRef, { kind: 'iso', path: f.path });
    }
    const st = await stat(req.file);
    const total = env.files.every((f) => f.sizeBytes !== undefined)
      ? env.files.reduce((a, f) => a + f.sizeBytes!, 0)
      : st.size;
    const progress = new Progress(Math.max(1, total), (p) => t.progress(p));
    let done = 0;
    const onBytes = (n: number): void => progress.report(Math.min(total, (done += n)));
    t.log(`reading ${req.file}${req.deployment ? ` (deployment option ${req.deployment})` : ''}`);
    await readPackage(req.file, {
      confined: true,
      ...(req.deployment !== undefined ? { configuration: req.deployment } : {}),
      properties: parseProps(req.props),
      onFile: async (pf) => {
        const list = targets.get(pf.file.id);
        if (!list?.length) {
          t.log(`${pf.file.href}: not used by any disk or drive; checked and skipped`);
          return;
        }
        const [first, ...more] = list;
        const src = counted(pf, onBytes);
        if (first!.kind === 'disk') {
          t.log(`${pf.file.href}: converting to a dynamic VHD`);
          const res = await importDiskToVhd(src, first!.d.disk!, first!.d.path, { signal: t.signal });
          for (const w of res.warnings) t.log(w);
          sizes.set(first!.d.path, res.sizeBytes);
        } else {
          t.log(`${pf.file.href}: copying the ISO`);
          await produceFileAtomic(first!.path, (tmp) =>
            pipeline(Readable.from(src.body), createWriteStream(tmp, { flags: 'wx' })),
          );
        }
        // A file two disks or drives share is read once and copied.
        const from = first!.kind === 'disk' ? first!.d.path : first!.path;
        for (const m of more) {
          const to = m.kind === 'disk' ? m.d.path : m.path;
          await produceFileAtomic(to, (tmp) => copyPrivate(from, tmp));
          if (m.kind === 'disk') sizes.set(to, sizes.get(from)!);
        }
      },
    });
    for (const vm of vms) {
      for (const d of vm.disks) {
        if (sizes.has(d.path)) continue;
        const bytes = d.blankBytes ?? d.disk?.capacityBytes;
        if (bytes === undefined || d.disk?.fileRef)
          throw new FdError(
            'FD_OVF_MISSING_FILE',
            `${vm.name}: the image of ${d.disk?.diskId ?? 'a disk'} was never read`,
          );
        t.log(`${vm.name}: creating a blank ${bytes}-byte disk`);
        const made = await createVhd(d.path, { sizeBytes: Math.ceil(bytes / 512) * 512, type: 'dynamic' });
        sizes.set(d.path, made.sizeBytes);
      }
      if (vm.env) {
        t.log(`${vm.name}: OVF environment ISO with ${vm.env.length} propert${vm.env.length === 1 ? 'y' : 'ies'}`);
        await buildEnvIso(vm);
      }
    }
    return await commit(host, plan, sizes, t);
  } catch (err) {
    for (const vm of vms) await rm(vm.dir, { recursive: true, force: true });
    throw err;
  }
}

/** Writes every VM, disk and group record in one transaction, after all files exist. */
async function commit(
  host: ApplianceHost,
  plan: ImportPlan,
  sizes: Map<string, number>,
  t: TaskHandle,
): Promise<ImportResult> {
  const now = new Date().toISOString();
  const records: VmRecord[] = [];
  const disks: DiskRecord[] = [];
  for (const vm of plan.vms) {
    const mine = vm.disks.map((d, i) => ({
      id: newUuid(),
      name: `${vm.name}-disk${i}`,
      pool: 'default',
      path: d.path,
      format: 'vhd' as const,
      sizeBytes: sizes.get(d.path)!,
      baseImage: null,
      vmId: vm.id,
      host: host.hostName,
      createdAt: now,
    }));
    disks.push(...mine);
    const nics = Array.from({ length: vm.nics }, (_, i) => ({
      id: `net${i}`,
      // Fresh MACs: two imports of one appliance must not share addresses.
      mac: macFromSeed(createHash('sha256').update(`${vm.id}/${i}`).digest()),
      network: 'default',
    }));
    records.push(
      VmRecord.parse({
        id: vm.id,
        name: vm.name,
        cpus: vm.cpus,
        memoryBytes: vm.memoryBytes,
        machine: 'q35',
        firmware: vm.firmware,
        boot: vm.disks.length ? ['disk', 'cdrom'] : ['cdrom', 'disk'],
        kernelImage: vm.kernelImage,
        disks: mine.map((d, i) => ({ id: `disk${i}`, diskId: d.id })),
        cdroms: vm.cdroms,
        nics,
        restartPolicy: 'never',
        ha: null,
        antiAffinity: null,
        desired: 'stopped',
        host: host.hostName,
        image: null,
        createdAt: now,
        updatedAt: now,
      }),
    );
  }
  const group: GroupRecord | undefined = plan.group && {
    name: plan.group.name,
    collection: plan.group.collection.name,
    source: plan.req.file,
    members: plan.vms.map((vm) => ({ vmId: vm.id, name: vm.name, ovfId: vm.vs.id, ...vm.startup })),
    createdAt: now,
  };
  await host.state.vms.create(records, disks, group ? [{ key: groupKey(group.name), value: group }] : []);
  for (const r of records) t.log(`VM ${r.name} created (${r.id})`);
  const properties: Record<string, string> = {};
  // Values of password properties stay out of the task record (they are on the ISO only).
  const secret = new Set(
    plan.vms.flatMap((vm) =>
      [vm.vs, ...vm.up].flatMap((e) =>
        e.products.flatMap((p) => p.properties.filter((x) => x.password).map((x) => x.fullKey)),
      ),
    ),
  );
  for (const vm of plan.vms) for (const p of vm.env ?? []) properties[p.key] = secret.has(p.key) ? '********' : p.value;
  return {
    vms: records.map((r) => ({
      id: r.id,
      name: r.name,
      cpus: r.cpus,
      memoryBytes: r.memoryBytes,
      disks: r.disks.length,
      nics: r.nics.length,
    })),
    group: group?.name ?? null,
    properties,
    warnings: plan.notes,
  };
}
