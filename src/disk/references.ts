/**
 * Does a disk image refer to anything outside itself? An uploaded or imported image is one file
 * from someone we do not trust, and the converters follow what it names: qemu-img opens a
 * qcow2's backing file and external data file and a VMDK's extents and parent, our VHD engine
 * opens a differencing disk's parent. Any of them can name a host file ("/etc/shadow",
 * "../../token"), which the conversion would then copy into an image. This module reads the
 * image's own headers (never following anything) and lists such references, so an import
 * refuses them before any converter runs. It is deliberately stricter than the formats: what a
 * single self-contained file never needs is refused even when a converter might ignore it.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { FdError } from '../core/errors.js';
import { probeFormat, type DiskFormat } from './open.js';
import { parseDescriptor } from './vmdk/descriptor.js';
import { FOOTER_SIZE, hasFooterCookie } from './vhd/footer.js';

export type ReferenceKind =
  'qcow2-backing-file' | 'qcow2-data-file' | 'vmdk-extent' | 'vmdk-parent' | 'vmdk-descriptor-extents' | 'vhd-parent';

export interface ExternalReference {
  kind: ReferenceKind;
  /** What the image names, as far as it can be read (a path, or a description). */
  detail: string;
}

// qcow2 header (big-endian), offsets from QEMU's docs/interop/qcow2.txt.
const Q_VERSION = 4,
  Q_BACKING_OFFSET = 8,
  Q_BACKING_SIZE = 16,
  Q_CLUSTER_BITS = 20,
  Q_INCOMPATIBLE = 72,
  Q_HEADER_LENGTH = 100;
const Q_V2_HEADER_BYTES = 72;
const Q_EXT_END = 0x00000000,
  Q_EXT_DATA_FILE = 0x44415441;
/** Incompatible feature bit 2: the guest data lives in an external data file. */
const Q_INCOMPAT_DATA_FILE = 1n << 2n;
/** Header extensions lie in the first cluster; cluster_bits is at most 21 (2 MiB). */
const Q_MAX_CLUSTER_BITS = 21;

// VMDK sparse header (little-endian), as in vmdk/header.ts.
const V_CAPACITY = 12,
  V_DESC_OFFSET = 28,
  V_DESC_SIZE = 36;
const SECTOR = 512;
/** QEMU reads a VMDK's parent hint from this many bytes at the descriptor (DESC_SIZE). */
const VMDK_DESC_BYTES = 20 * SECTOR;
/** Where QEMU looks for the embedded descriptor of a sparse VMDK. */
const VMDK_EMBEDDED_DESC_AT = 0x200;
const TEXT_DESCRIPTOR_MAX_BYTES = 64 * 1024;

// VHD footer (big-endian).
const VHD_DISK_TYPE = 60;
const VHD_DIFFERENCING = 4;

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  return buf.subarray(0, bytesRead);
}

/** References in a qcow2 image from its header and the header extensions of its first cluster. */
export function qcow2References(head: Buffer): ExternalReference[] {
  const out: ExternalReference[] = [];
  if (head.length < Q_V2_HEADER_BYTES) return out;
  const version = head.readUInt32BE(Q_VERSION);
  const backingOffset = head.readBigUInt64BE(Q_BACKING_OFFSET);
  if (backingOffset !== 0n) {
    const size = head.readUInt32BE(Q_BACKING_SIZE);
    const at = Number(backingOffset);
    const name =
      at + size <= head.length ? head.toString('utf8', at, at + Math.min(size, 1023)) : '(beyond the header)';
    out.push({ kind: 'qcow2-backing-file', detail: name || '(empty name)' });
  }
  if (version < 3) return out;
  if (head.length >= Q_HEADER_LENGTH + 4) {
    if ((head.readBigUInt64BE(Q_INCOMPATIBLE) & Q_INCOMPAT_DATA_FILE) !== 0n)
      out.push({ kind: 'qcow2-data-file', detail: 'the external data file feature is set' });
    let off = head.readUInt32BE(Q_HEADER_LENGTH);
    while (off + 8 <= head.length) {
      const type = head.readUInt32BE(off);
      const len = head.readUInt32BE(off + 4);
      if (type === Q_EXT_END) break;
      if (type === Q_EXT_DATA_FILE) {
        const name = off + 8 + len <= head.length ? head.toString('utf8', off + 8, off + 8 + len) : '';
        if (!out.some((r) => r.kind === 'qcow2-data-file' && r.detail === name))
          out.push({ kind: 'qcow2-data-file', detail: name || '(unnamed)' });
      }
      off += 8 + Math.ceil(len / 8) * 8;
    }
  }
  return out;
}

/** A VMDK parent named anywhere QEMU looks for one (it searches the descriptor text). */
function parentHint(text: string): ExternalReference | undefined {
  const m = /parentFileNameHint\s*=\s*"?([^"\r\n]*)"?/.exec(text);
  if (m) return { kind: 'vmdk-parent', detail: m[1] || '(empty name)' };
  return text.includes('parentFileNameHint') ? { kind: 'vmdk-parent', detail: '(unreadable hint)' } : undefined;
}

/**
 * A text descriptor (the whole file is the descriptor) holds no data of its own: every extent
 * with a file name points elsewhere. Only ZERO extents (no file) are self-contained.
 */
export function vmdkDescriptorReferences(text: string): ExternalReference[] {
  const out: ExternalReference[] = [];
  const parsed = parseDescriptor(text).extents;
  for (const e of parsed) {
    if (e.file !== undefined || e.type.toUpperCase() !== 'ZERO')
      out.push({ kind: 'vmdk-extent', detail: `${e.type} extent ${e.file === undefined ? '' : `"${e.file}"`}`.trim() });
  }
  // Extent-like lines our parser did not take (odd case or spacing) may still be read by another.
  const extentLines = text
    .split(/\r?\n/)
    .map((l) => l.replace(/\0.*$/, '').trim())
    .filter((l) => /^(RW|RDONLY|NOACCESS)\s/i.test(l));
  if (extentLines.length > parsed.length)
    out.push({ kind: 'vmdk-extent', detail: `unparsed extent line "${extentLines.at(-1)!.slice(0, 200)}"` });
  const parent = parentHint(text);
  if (parent) out.push(parent);
  return out;
}

async function vmdkReferences(fh: FileHandle, sizeBytes: number): Promise<ExternalReference[]> {
  const head = await readAt(fh, 0, SECTOR);
  if (head.toString('latin1', 0, 4) !== 'KDMV') {
    // A text descriptor: the extents are other files.
    const text = (await readAt(fh, 0, Math.min(sizeBytes, TEXT_DESCRIPTOR_MAX_BYTES))).toString('latin1');
    return vmdkDescriptorReferences(text);
  }
  const out: ExternalReference[] = [];
  const capacity = head.length >= V_CAPACITY + 8 ? head.readBigUInt64LE(V_CAPACITY) : 0n;
  const descSector = head.length >= V_DESC_OFFSET + 8 ? head.readBigUInt64LE(V_DESC_OFFSET) : 0n;
  const descSectors = head.length >= V_DESC_SIZE + 8 ? head.readBigUInt64LE(V_DESC_SIZE) : 0n;
  // A sparse header with no capacity makes QEMU open its embedded descriptor's extents instead.
  if (capacity === 0n && descSector !== 0n)
    out.push({
      kind: 'vmdk-descriptor-extents',
      detail: 'sparse header without capacity: extents come from its descriptor',
    });
  const texts = [(await readAt(fh, VMDK_EMBEDDED_DESC_AT, VMDK_DESC_BYTES)).toString('latin1')];
  if (descSector !== 0n && descSector * BigInt(SECTOR) < BigInt(sizeBytes)) {
    const len = Math.min(Number(descSectors || 20n) * SECTOR, TEXT_DESCRIPTOR_MAX_BYTES);
    texts.push((await readAt(fh, Number(descSector) * SECTOR, len)).toString('latin1'));
  }
  for (const t of texts) {
    const p = parentHint(t);
    if (p && !out.some((r) => r.kind === 'vmdk-parent')) out.push(p);
  }
  return out;
}

async function vhdReferences(fh: FileHandle, sizeBytes: number): Promise<ExternalReference[]> {
  let footer = sizeBytes >= FOOTER_SIZE ? await readAt(fh, sizeBytes - FOOTER_SIZE, FOOTER_SIZE) : Buffer.alloc(0);
  if (!hasFooterCookie(footer)) footer = await readAt(fh, 0, FOOTER_SIZE); // the copy at 0 of a dynamic VHD
  if (footer.length < VHD_DISK_TYPE + 4 || footer.readUInt32BE(VHD_DISK_TYPE) !== VHD_DIFFERENCING) return [];
  return [{ kind: 'vhd-parent', detail: 'a differencing VHD (its data is partly in a parent disk)' }];
}

/** What `path` names outside itself; empty for a self-contained image. Follows nothing. */
export async function findExternalReferences(
  path: string,
  format?: DiskFormat,
): Promise<{ format: DiskFormat; references: ExternalReference[] }> {
  const fmt = format ?? (await probeFormat(path));
  const fh = await open(path, 'r');
  try {
    const sizeBytes = (await fh.stat()).size;
    let references: ExternalReference[] = [];
    if (fmt === 'qcow2') {
      const clusterBits = Math.min((await readAt(fh, Q_CLUSTER_BITS, 4)).readUInt32BE(0) || 16, Q_MAX_CLUSTER_BITS);
      references = qcow2References(await readAt(fh, 0, Math.min(sizeBytes, 2 ** clusterBits)));
    } else if (fmt === 'vmdk') references = await vmdkReferences(fh, sizeBytes);
    else if (fmt === 'vhd') references = await vhdReferences(fh, sizeBytes);
    return { format: fmt, references };
  } finally {
    await fh.close();
  }
}

/**
 * Refuses an image that names anything outside itself (FD_DISK_EXTERNAL_REFERENCE) and returns
 * its format. `label` is how the user knows the file (an upload has no path of theirs).
 */
export async function assertSelfContained(path: string, label = path, format?: DiskFormat): Promise<DiskFormat> {
  const { format: fmt, references } = await findExternalReferences(path, format);
  if (references.length === 0) return fmt;
  const what = references.map((r) => `${r.kind}: ${r.detail}`).join('; ');
  throw new FdError('FD_DISK_EXTERNAL_REFERENCE', `${label} is a ${fmt} image that refers to other files (${what})`, {
    hint:
      fmt === 'vhd'
        ? 'merge the differencing disk into its parent first (qemu-img convert to a standalone image), then import that'
        : 'convert it to a standalone image first (e.g. qemu-img convert -O qcow2 IN OUT, which flattens backing files and extents)',
    details: { references },
  });
}
