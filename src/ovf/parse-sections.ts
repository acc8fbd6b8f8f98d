/** Envelope-level sections of an OVF descriptor: References, DiskSection, NetworkSection, DeploymentOptionSection, and the check that every reference resolves. */
import { FdError } from '../core/errors.js';
import type {
  DiskFormat,
  OvfConfiguration,
  OvfDisk,
  OvfEntity,
  OvfFile,
  OvfNetwork,
  OvfVirtualSystem,
} from './model.js';
import { toBytes } from './units.js';
import { attrNs, type XmlElement } from './xml.js';
import { Ctx } from './parse-context.js';

export function parseReferences(ctx: Ctx, root: XmlElement): OvfFile[] {
  const refs = ctx.child(root, 'References');
  if (!refs) return [];
  const out: OvfFile[] = [];
  for (const f of ctx.childrenOf(refs, 'File')) {
    const id = ctx.attr(f, 'id');
    const href = ctx.attr(f, 'href');
    if (!id || !href) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `References: a File lacks ${id ? 'href' : 'id'}`);
      continue;
    }
    if (attrNs(f, undefined, 'href') !== undefined && attrNs(f, ctx.ns, 'href') === undefined && !ctx.lenient) {
      ctx.warnings.push(`File ${id}: href attribute is unqualified (expected ovf:href)`);
    }
    const file: OvfFile = { id, href };
    const size = ctx.attr(f, 'size');
    if (size !== undefined) file.sizeBytes = toBytes(size, undefined, `File ${id} size`);
    const comp = ctx.attr(f, 'compression');
    if (comp !== undefined && comp !== '' && comp !== 'identity') {
      file.compression = comp;
      if (comp !== 'gzip')
        ctx.problem('FD_OVF_UNSUPPORTED_COMPRESSION', `File ${href}: compression "${comp}" is not gzip`);
    }
    const chunk = ctx.attr(f, 'chunkSize');
    if (chunk !== undefined) file.chunkSizeBytes = toBytes(chunk, undefined, `File ${id} chunkSize`);
    out.push(file);
  }
  return out;
}

export function formatKind(format: string | undefined): DiskFormat {
  if (!format) return 'unknown';
  const f = format.toLowerCase();
  if (f.includes('vmdk')) {
    if (f.endsWith('#streamoptimized')) return 'vmdk-streamOptimized';
    // VMware's OVF 0.9 exports name streamOptimized disks "vmdk.html#compressed"
    if (f.endsWith('#compressed')) return 'vmdk-streamOptimized';
    if (f.endsWith('#sparse') || f.endsWith('#monolithicsparse')) return 'vmdk-sparse';
    return 'unknown';
  }
  if (f.includes('vhd')) return 'vhd';
  if (f.includes('qcow')) return 'qcow2';
  if (f.includes('raw')) return 'raw';
  return 'unknown';
}

/** Disks with their capacity still unresolved when it is a ${property} reference. */
export interface PendingDisk extends OvfDisk {
  capacityText?: string;
  capacityUnits?: string;
}

export function parseDiskSection(ctx: Ctx, sec: XmlElement): OvfDisk[] {
  const out: OvfDisk[] = [];
  for (const d of ctx.childrenOf(sec, 'Disk')) {
    const diskId = ctx.attr(d, 'diskId');
    if (!diskId) {
      ctx.problem('FD_OVF_BAD_REFERENCE', 'DiskSection: a Disk lacks ovf:diskId');
      continue;
    }
    const format = ctx.attr(d, 'format');
    const disk: PendingDisk = { diskId, formatKind: formatKind(format) };
    const fileRef = ctx.attr(d, 'fileRef');
    if (fileRef) disk.fileRef = fileRef;
    if (format) disk.format = format;
    const parentRef = ctx.attr(d, 'parentRef');
    if (parentRef) disk.parentRef = parentRef;
    const capacity = ctx.attr(d, 'capacity');
    const units = ctx.attr(d, 'capacityAllocationUnits');
    if (capacity === undefined) ctx.problem('FD_OVF_BAD_CAPACITY', `Disk ${diskId}: no ovf:capacity`);
    else {
      disk.capacityText = capacity;
      if (units !== undefined) disk.capacityUnits = units;
    }
    const populated = ctx.attr(d, 'populatedSize');
    if (populated !== undefined && /^\d+$/.test(populated)) disk.populatedSizeBytes = Number(populated);
    if (fileRef && disk.formatKind === 'unknown') {
      ctx.warnings.push(`Disk ${diskId}: format "${format ?? '(none)'}" is not recognized; the file will be probed`);
    }
    out.push(disk);
  }
  return out;
}

export function resolveCapacity(ctx: Ctx, disk: PendingDisk, props: Map<string, string>): void {
  const text = disk.capacityText;
  const units = disk.capacityUnits;
  delete disk.capacityText;
  delete disk.capacityUnits;
  if (text === undefined) return;
  let value = text.trim();
  const ref = /^\$\{([^}]+)\}$/.exec(value);
  if (ref) {
    const v = props.get(ref[1]!);
    if (v === undefined || v.trim() === '') {
      ctx.problem('FD_OVF_BAD_CAPACITY', `Disk ${disk.diskId}: capacity ${value} names no property with a value`);
      return;
    }
    value = v.trim();
  }
  try {
    disk.capacityBytes = toBytes(value, units, `Disk ${disk.diskId} capacity`);
  } catch (err) {
    if (!(err instanceof FdError)) throw err;
    ctx.problem('FD_OVF_BAD_CAPACITY', err.message);
  }
}

export function parseNetworkSection(ctx: Ctx, sec: XmlElement): OvfNetwork[] {
  return ctx.childrenOf(sec, 'Network').flatMap((n) => {
    const name = ctx.attr(n, 'name');
    if (!name) {
      ctx.problem('FD_OVF_BAD_REFERENCE', 'NetworkSection: a Network lacks ovf:name');
      return [];
    }
    const description = ctx.text(n, 'Description');
    return [{ name, ...(description ? { description } : {}) }];
  });
}

export function parseDeploymentOptions(ctx: Ctx, sec: XmlElement): OvfConfiguration[] {
  return ctx.childrenOf(sec, 'Configuration').flatMap((c) => {
    const id = ctx.attr(c, 'id');
    if (!id) return [];
    const label = ctx.text(c, 'Label');
    const description = ctx.text(c, 'Description');
    return [
      {
        id,
        default: ctx.attr(c, 'default') === 'true',
        ...(label ? { label } : {}),
        ...(description ? { description } : {}),
      },
    ];
  });
}

export function checkReferences(
  ctx: Ctx,
  files: OvfFile[],
  disks: OvfDisk[],
  networks: OvfNetwork[],
  entity: OvfEntity,
): void {
  const fileIds = new Set<string>();
  const hrefs = new Set<string>();
  for (const f of files) {
    if (fileIds.has(f.id)) ctx.problem('FD_OVF_BAD_REFERENCE', `References: file id "${f.id}" is used twice`);
    fileIds.add(f.id);
    if (hrefs.has(f.href)) ctx.problem('FD_OVF_BAD_REFERENCE', `References: href "${f.href}" is listed twice`);
    hrefs.add(f.href);
    if (/^[a-z][a-z0-9+.-]*:/i.test(f.href)) {
      ctx.problem(
        'FD_OVF_EXTERNAL_FILE',
        `File ${f.id}: href "${f.href}" is a URL; only files in the package are read`,
      );
    } else if (f.href.startsWith('/') || f.href.split(/[\\/]/).includes('..')) {
      ctx.problem('FD_OVF_UNSAFE_HREF', `File ${f.id}: href "${f.href}" points outside the package`);
    }
  }
  const diskIds = new Set(disks.map((d) => d.diskId));
  for (const d of disks) {
    if (d.fileRef && !fileIds.has(d.fileRef)) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `Disk ${d.diskId}: ovf:fileRef "${d.fileRef}" names no File in References`);
    }
    if (d.parentRef && !diskIds.has(d.parentRef)) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `Disk ${d.diskId}: ovf:parentRef "${d.parentRef}" names no Disk`);
    }
  }
  const netNames = new Set(networks.map((n) => n.name));
  const netLower = new Set(networks.map((n) => n.name.toLowerCase()));
  for (const vs of virtualSystemsOf(entity)) {
    for (const d of vs.disks) {
      if (d.diskId && !diskIds.has(d.diskId)) {
        ctx.problem(
          'FD_OVF_BAD_REFERENCE',
          `${vs.name}: disk item ${d.instanceId} refers to ovf:/disk/${d.diskId}, which is not in DiskSection`,
        );
      }
    }
    for (const d of vs.drives) {
      if (d.fileRef && !fileIds.has(d.fileRef)) {
        ctx.problem(
          'FD_OVF_BAD_REFERENCE',
          `${vs.name}: drive ${d.instanceId} refers to ovf:/file/${d.fileRef}, which is not in References`,
        );
      }
    }
    for (const n of vs.nics) {
      if (n.network && !netNames.has(n.network)) {
        ctx.warnings.push(
          netLower.has(n.network.toLowerCase())
            ? `${vs.name}: NIC ${n.instanceId} network "${n.network}" matches a NetworkSection name only ignoring case`
            : `${vs.name}: NIC ${n.instanceId} network "${n.network}" is not in NetworkSection`,
        );
      }
    }
  }
}

export function virtualSystemsOf(e: OvfEntity): OvfVirtualSystem[] {
  return e.kind === 'VirtualSystem' ? [e] : e.members.flatMap(virtualSystemsOf);
}
