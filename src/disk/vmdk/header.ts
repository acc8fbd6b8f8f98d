/**
 * The 512-byte VMDK sparse extent header (little-endian, from VMware's "Virtual Disk Format
 * 5.0"): parse, serialize, and the flag bits that make an extent streamOptimized.
 */
import { FdError } from '../../core/errors.js';

export const SECTOR = 512;
export const MAGIC = 0x564d444b; // "KDMV"
export const GD_AT_END = 0xffffffffffffffffn;

const MAGIC_OFF = 0,
  VERSION = 4,
  FLAGS = 8,
  CAPACITY = 12,
  GRAIN_SIZE = 20,
  DESCRIPTOR_OFFSET = 28,
  DESCRIPTOR_SIZE = 36,
  NUM_GTES_PER_GT = 44,
  RGD_OFFSET = 48,
  GD_OFFSET = 56,
  OVERHEAD = 64,
  UNCLEAN = 72,
  NEWLINE_CHARS = 73,
  COMPRESS_ALGORITHM = 77;

export const FLAG_VALID_NEWLINE = 1 << 0;
export const FLAG_REDUNDANT_GT = 1 << 1;
export const FLAG_COMPRESSED = 1 << 16;
export const FLAG_MARKERS = 1 << 17;
export const COMPRESSION_DEFLATE = 1;

export interface SparseHeader {
  version: number;
  flags: number;
  capacitySectors: number;
  grainSectors: number;
  descriptorOffsetSectors: number;
  descriptorSizeSectors: number;
  gtesPerGt: number;
  rgdOffsetSectors: number;
  /** undefined when the header says GD_AT_END (the footer holds the real one). */
  gdOffsetSectors: number | undefined;
  overheadSectors: number;
  compressAlgorithm: number;
}

function u64(buf: Buffer, off: number, field: string, source: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: header field ${field} is out of range (${v})`);
  }
  return Number(v);
}

export function parseSparseHeader(buf: Buffer, source: string): SparseHeader {
  if (buf.length < SECTOR || buf.readUInt32LE(MAGIC_OFF) !== MAGIC) {
    throw new FdError('FD_VMDK_BAD_MAGIC', `${source} is not a sparse VMDK (no "KDMV" header)`, {
      hint: 'only streamOptimized and sparse VMDK extents are read; check the file format',
    });
  }
  const version = buf.readUInt32LE(VERSION);
  if (version < 1 || version > 3) {
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: VMDK sparse version ${version} is not supported`);
  }
  const gd = buf.readBigUInt64LE(GD_OFFSET);
  const h: SparseHeader = {
    version,
    flags: buf.readUInt32LE(FLAGS),
    capacitySectors: u64(buf, CAPACITY, 'capacity', source),
    grainSectors: u64(buf, GRAIN_SIZE, 'grainSize', source),
    descriptorOffsetSectors: u64(buf, DESCRIPTOR_OFFSET, 'descriptorOffset', source),
    descriptorSizeSectors: u64(buf, DESCRIPTOR_SIZE, 'descriptorSize', source),
    gtesPerGt: buf.readUInt32LE(NUM_GTES_PER_GT),
    rgdOffsetSectors: u64(buf, RGD_OFFSET, 'rgdOffset', source),
    gdOffsetSectors: gd === GD_AT_END ? undefined : u64(buf, GD_OFFSET, 'gdOffset', source),
    overheadSectors: u64(buf, OVERHEAD, 'overHead', source),
    compressAlgorithm: buf.readUInt16LE(COMPRESS_ALGORITHM),
  };
  const g = h.grainSectors;
  if (g < 8 || g > 2048 || (g & (g - 1)) !== 0) {
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: grain size ${g} sectors is not a power of two in 8..2048`);
  }
  if (h.gtesPerGt === 0 || h.gtesPerGt > 1 << 16) {
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: ${h.gtesPerGt} entries per grain table is out of range`);
  }
  if (h.capacitySectors > 2 ** 40) {
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: capacity of ${h.capacitySectors} sectors is beyond 512 TiB`);
  }
  return h;
}

export function isStreamOptimized(h: SparseHeader): boolean {
  return (h.flags & FLAG_COMPRESSED) !== 0 && (h.flags & FLAG_MARKERS) !== 0;
}

export function serializeSparseHeader(h: SparseHeader): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeUInt32LE(MAGIC, MAGIC_OFF);
  buf.writeUInt32LE(h.version, VERSION);
  buf.writeUInt32LE(h.flags >>> 0, FLAGS);
  buf.writeBigUInt64LE(BigInt(h.capacitySectors), CAPACITY);
  buf.writeBigUInt64LE(BigInt(h.grainSectors), GRAIN_SIZE);
  buf.writeBigUInt64LE(BigInt(h.descriptorOffsetSectors), DESCRIPTOR_OFFSET);
  buf.writeBigUInt64LE(BigInt(h.descriptorSizeSectors), DESCRIPTOR_SIZE);
  buf.writeUInt32LE(h.gtesPerGt, NUM_GTES_PER_GT);
  buf.writeBigUInt64LE(BigInt(h.rgdOffsetSectors), RGD_OFFSET);
  buf.writeBigUInt64LE(h.gdOffsetSectors === undefined ? GD_AT_END : BigInt(h.gdOffsetSectors), GD_OFFSET);
  buf.writeBigUInt64LE(BigInt(h.overheadSectors), OVERHEAD);
  buf.writeUInt8(0, UNCLEAN);
  // The newline-detection bytes let a reader notice a file mangled by FTP text mode.
  buf.write('\n \r\n', NEWLINE_CHARS, 'latin1');
  buf.writeUInt16LE(h.compressAlgorithm, COMPRESS_ALGORITHM);
  return buf;
}
