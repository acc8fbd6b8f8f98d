/**
 * `ovf inspect`: the normalized view of an appliance a person or script reads before importing:
 * per virtual system its name, OS, vCPUs, memory, disks (capacity and source file), NICs,
 * properties and EULA, plus the warnings and problems found while reading it.
 */
import { formatSize } from '../core/units.js';
import type { OvfEntity, OvfEnvelope, OvfProblem, OvfProperty, OvfVirtualSystem } from './model.js';
import { readPackage } from './package.js';
import type { ParseOptions } from './parse.js';

export interface InspectedDisk {
  diskId?: string;
  capacityBytes?: number;
  controller?: string;
  address?: string;
  file?: string;
  fileSizeBytes?: number;
  compression?: string;
  format?: string;
}

export interface InspectedSystem {
  id: string;
  name: string;
  /** Collection ids from the top down to this system. */
  path: string[];
  os?: string;
  osCimId?: number;
  vcpus: number;
  memoryBytes?: number;
  disks: InspectedDisk[];
  nics: { network?: string; adapterType?: string; mac?: string }[];
  drives: { kind: string; file?: string }[];
  devices: string[];
  properties: OvfProperty[];
  eula: boolean;
  annotation?: string;
}

export interface InspectResult {
  file: string;
  kind: 'ova' | 'ovf';
  ovfVersion: string;
  configuration?: string;
  configurations: string[];
  systems: InspectedSystem[];
  startupOrder?: { id: string; order: number; startDelayS: number; stopDelayS: number }[];
  warnings: string[];
  problems: OvfProblem[];
  model: OvfEnvelope;
}

export async function inspectPackage(path: string, opts: ParseOptions = {}): Promise<InspectResult> {
  const report = await readPackage(path, { ...opts, descriptorOnly: true });
  const env = report.envelope;
  const systems: InspectedSystem[] = [];
  const walk = (e: OvfEntity, trail: string[]): void => {
    if (e.kind === 'VirtualSystem') systems.push(summarize(env, e, trail));
    else for (const m of e.members) walk(m, [...trail, e.id]);
  };
  walk(env.entity, []);
  return {
    file: path,
    kind: report.kind,
    ovfVersion: env.version,
    ...(env.configuration !== undefined ? { configuration: env.configuration } : {}),
    configurations: env.configurations.map((c) => c.id),
    systems,
    ...(env.entity.kind === 'VirtualSystemCollection' ? { startupOrder: env.entity.startup } : {}),
    warnings: [...env.warnings, ...report.warnings],
    problems: env.problems,
    model: env,
  };
}

function summarize(env: OvfEnvelope, vs: OvfVirtualSystem, path: string[]): InspectedSystem {
  const disks = vs.disks.map((d): InspectedDisk => {
    const disk = d.diskId ? env.disks.find((x) => x.diskId === d.diskId) : undefined;
    const file = disk?.fileRef ? env.files.find((f) => f.id === disk.fileRef) : undefined;
    const ctl = vs.controllers.find((c) => c.instanceId === d.controllerId);
    const capacityBytes = disk?.capacityBytes ?? d.capacityBytes;
    return {
      ...(d.diskId ? { diskId: d.diskId } : {}),
      ...(capacityBytes !== undefined ? { capacityBytes } : {}),
      ...(ctl ? { controller: ctl.subtype ? `${ctl.kind}/${ctl.subtype}` : ctl.kind } : {}),
      ...(d.addressOnParent !== undefined ? { address: d.addressOnParent } : {}),
      ...(file ? { file: file.href } : {}),
      ...(file?.sizeBytes !== undefined ? { fileSizeBytes: file.sizeBytes } : {}),
      ...(file?.compression ? { compression: file.compression } : {}),
      ...(disk ? { format: disk.formatKind } : {}),
    };
  });
  const os = vs.os?.name ?? vs.os?.description ?? vs.os?.vendorType;
  return {
    id: vs.id,
    name: vs.name,
    path,
    ...(os ? { os } : {}),
    ...(vs.os?.cimId !== undefined ? { osCimId: vs.os.cimId } : {}),
    vcpus: vs.vcpus ?? 1,
    ...(vs.memoryBytes !== undefined ? { memoryBytes: vs.memoryBytes } : {}),
    disks,
    nics: vs.nics.map((n) => ({
      ...(n.network ? { network: n.network } : {}),
      ...(n.adapterType ? { adapterType: n.adapterType } : {}),
      ...(n.mac ? { mac: n.mac } : {}),
    })),
    drives: vs.drives.map((d) => {
      const f = d.fileRef ? env.files.find((x) => x.id === d.fileRef) : undefined;
      return { kind: d.kind, ...(f ? { file: f.href } : {}) };
    }),
    devices: vs.devices.map((d) => (d.subtype ? `${d.kind}/${d.subtype}` : d.kind)),
    properties: vs.products.flatMap((p) => p.properties),
    eula: vs.eulas.length > 0,
    ...(vs.annotation !== undefined ? { annotation: vs.annotation } : {}),
  };
}

/** The people's rendering: one block per system, then warnings and problems. */
export function renderInspect(r: InspectResult): string {
  const out: string[] = [`${r.file}: ${r.kind.toUpperCase()}, OVF ${r.ovfVersion}`];
  if (r.configurations.length)
    out.push(`deployment options: ${r.configurations.join(', ')} (using ${r.configuration})`);
  if (r.startupOrder?.length) {
    out.push(`startup order: ${r.startupOrder.map((s) => `${s.id}#${s.order}+${s.startDelayS}s`).join(', ')}`);
  }
  for (const s of r.systems) {
    out.push('', `${[...s.path, s.id].join(' / ')}: ${s.name}`);
    out.push(`  os:       ${s.os ?? '-'}${s.osCimId !== undefined ? ` (CIM ${s.osCimId})` : ''}`);
    out.push(`  cpu:      ${s.vcpus}`);
    out.push(
      `  memory:   ${s.memoryBytes !== undefined ? `${formatSize(s.memoryBytes)} (${s.memoryBytes} bytes)` : '-'}`,
    );
    for (const d of s.disks) {
      const cap = d.capacityBytes !== undefined ? formatSize(d.capacityBytes) : 'unknown size';
      out.push(
        `  disk:     ${d.diskId ?? '(new)'} ${cap}${d.controller ? ` on ${d.controller}:${d.address ?? '?'}` : ''}` +
          `${d.file ? ` <- ${d.file}${d.format ? ` (${d.format}${d.compression ? `, ${d.compression}` : ''})` : ''}` : ' (empty)'}`,
      );
    }
    for (const n of s.nics) out.push(`  nic:      ${n.adapterType ?? '?'} on ${n.network ?? '(none)'}`);
    for (const d of s.drives) out.push(`  ${d.kind.padEnd(9)} ${d.file ?? '(empty)'}`);
    if (s.devices.length) out.push(`  devices:  ${s.devices.join(', ')}`);
    for (const p of s.properties) {
      out.push(
        `  property: ${p.fullKey} (${p.type}${p.userConfigurable ? ', configurable' : ''}) = ${JSON.stringify(p.defaultValue ?? '')}`,
      );
    }
    out.push(`  eula:     ${s.eula ? 'yes (must be accepted to import)' : 'no'}`);
  }
  for (const w of r.warnings) out.push(`warning: ${w}`);
  for (const p of r.problems) out.push(`problem: ${p.code}: ${p.message}`);
  return out.join('\n');
}
