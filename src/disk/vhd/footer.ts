/**
 * The 512-byte VHD footer (big-endian): parse, serialize, checksum. Every VHD ends with one;
 * dynamic and differencing disks keep a copy at offset 0. Offsets are from the Microsoft VHD
 * specification; which fields we trust and how is decided here and in check.ts.
 */
import { randomBytes } from 'node:crypto';
import { vhdError, REPAIR_HINT } from './errors.js';

const COOKIE = 0;
const FEATURES = 8;
const FORMAT_VERSION = 12;
const DATA_OFFSET = 16;
const TIMESTAMP = 24;
const CREATOR_APP = 28;
const CREATOR_VERSION = 32;
const CREATOR_HOST_OS = 36;
const ORIGINAL_SIZE = 40;
const CURRENT_SIZE = 48;
const CYLINDERS = 56;
const HEADS = 58;
const SECTORS_PER_TRACK = 59;
const DISK_TYPE = 60;
const CHECKSUM = 64;
const UNIQUE_ID = 68;
const SAVED_STATE = 84;

export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = 'conectix';
/** VHD timestamps count seconds from 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_MS = Date.UTC(2000, 0, 1);
/** Fixed disks have no dynamic header: their data offset is all ones. */
export const NO_DATA_OFFSET = -1;

export type DiskType = 'fixed' | 'dynamic' | 'differencing';
const DISK_TYPES: Record<number, DiskType> = { 2: 'fixed', 3: 'dynamic', 4: 'differencing' };
const DISK_TYPE_CODES: Record<DiskType, number> = { fixed: 2, dynamic: 3, differencing: 4 };

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export interface Footer {
  features: number;
  formatVersion: number;
  /** Byte offset of the dynamic header, or NO_DATA_OFFSET for fixed disks. */
  dataOffset: number;
  timestamp: number;
  /** Four bytes, latin1; may contain NULs ("tap\0", "wa\0\0"). */
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: DiskType;
  checksum: number;
  uniqueId: Buffer;
  savedState: number;
}

/** One's complement of the byte sum, with the 4 checksum bytes counted as zero. */
export function vhdChecksum(buf: Buffer, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum = (sum + buf[i]!) >>> 0;
  }
  return ~sum >>> 0;
}

export function footerChecksumOk(buf: Buffer): boolean {
  return vhdChecksum(buf, CHECKSUM) === buf.readUInt32BE(CHECKSUM);
}

export function hasFooterCookie(buf: Buffer): boolean {
  return buf.length >= FOOTER_SIZE && buf.toString('latin1', COOKIE, COOKIE + 8) === FOOTER_COOKIE;
}

function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64BE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw vhdError('FD_VHD_BAD_SIZE', `${what} is absurd (${v})`, REPAIR_HINT);
  }
  return Number(v);
}

/**
 * Parses a footer. `where` names the copy ("trailing footer", "footer copy at offset 0") so the
 * error says which one is bad. Checksums are verified unless `verifyChecksum` is false (check.ts
 * reads broken footers to describe them).
 */
export function parseFooter(buf: Buffer, where = 'footer', verifyChecksum = true): Footer {
  if (!hasFooterCookie(buf)) {
    throw vhdError(
      'FD_VHD_BAD_COOKIE',
      `${where} is not a VHD footer (cookie is not "conectix")`,
      'this file is not a VHD image, or its footer was overwritten',
    );
  }
  const checksum = buf.readUInt32BE(CHECKSUM);
  if (verifyChecksum && vhdChecksum(buf, CHECKSUM) !== checksum) {
    throw vhdError(
      'FD_VHD_BAD_CHECKSUM',
      `${where} checksum is wrong (stored 0x${checksum.toString(16)}, computed 0x${vhdChecksum(buf, CHECKSUM).toString(16)})`,
      REPAIR_HINT,
    );
  }
  const typeCode = buf.readUInt32BE(DISK_TYPE);
  const diskType = DISK_TYPES[typeCode];
  if (!diskType) {
    throw vhdError(
      'FD_VHD_BAD_HEADER',
      `${where} names disk type ${typeCode}, not fixed (2), dynamic (3) or differencing (4)`,
    );
  }
  const rawOffset = buf.readBigUInt64BE(DATA_OFFSET);
  let dataOffset = NO_DATA_OFFSET;
  if (diskType !== 'fixed') {
    if (rawOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw vhdError('FD_VHD_BAD_HEADER', `${where} of a ${diskType} disk has no dynamic header offset`, REPAIR_HINT);
    }
    dataOffset = Number(rawOffset);
  }
  return {
    features: buf.readUInt32BE(FEATURES),
    formatVersion: buf.readUInt32BE(FORMAT_VERSION),
    dataOffset,
    timestamp: buf.readUInt32BE(TIMESTAMP),
    creatorApp: buf.toString('latin1', CREATOR_APP, CREATOR_APP + 4),
    creatorVersion: buf.readUInt32BE(CREATOR_VERSION),
    creatorHostOs: buf.toString('latin1', CREATOR_HOST_OS, CREATOR_HOST_OS + 4),
    originalSize: u64(buf, ORIGINAL_SIZE, `original size in ${where}`),
    currentSize: u64(buf, CURRENT_SIZE, `current size in ${where}`),
    geometry: {
      cylinders: buf.readUInt16BE(CYLINDERS),
      heads: buf[HEADS]!,
      sectorsPerTrack: buf[SECTORS_PER_TRACK]!,
    },
    diskType,
    checksum,
    uniqueId: Buffer.from(buf.subarray(UNIQUE_ID, UNIQUE_ID + 16)),
    savedState: buf[SAVED_STATE]!,
  };
}

/** Serializes with a fresh checksum; reserved bytes are zero. */
export function serializeFooter(f: Footer): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write(FOOTER_COOKIE, COOKIE, 'latin1');
  buf.writeUInt32BE(f.features, FEATURES);
  buf.writeUInt32BE(f.formatVersion, FORMAT_VERSION);
  buf.writeBigUInt64BE(f.dataOffset === NO_DATA_OFFSET ? 0xffffffffffffffffn : BigInt(f.dataOffset), DATA_OFFSET);
  buf.writeUInt32BE(f.timestamp >>> 0, TIMESTAMP);
  buf.write(f.creatorApp.padEnd(4, '\0').slice(0, 4), CREATOR_APP, 'latin1');
  buf.writeUInt32BE(f.creatorVersion, CREATOR_VERSION);
  buf.write(f.creatorHostOs.padEnd(4, '\0').slice(0, 4), CREATOR_HOST_OS, 'latin1');
  buf.writeBigUInt64BE(BigInt(f.originalSize), ORIGINAL_SIZE);
  buf.writeBigUInt64BE(BigInt(f.currentSize), CURRENT_SIZE);
  buf.writeUInt16BE(f.geometry.cylinders, CYLINDERS);
  buf[HEADS] = f.geometry.heads;
  buf[SECTORS_PER_TRACK] = f.geometry.sectorsPerTrack;
  buf.writeUInt32BE(DISK_TYPE_CODES[f.diskType], DISK_TYPE);
  f.uniqueId.copy(buf, UNIQUE_ID, 0, 16);
  buf[SAVED_STATE] = f.savedState;
  const sum = vhdChecksum(buf, CHECKSUM);
  buf.writeUInt32BE(sum, CHECKSUM);
  return buf;
}

export function vhdTimestampNow(): number {
  return Math.floor((Date.now() - VHD_EPOCH_MS) / 1000) >>> 0;
}

export function newUniqueId(): Buffer {
  const id = randomBytes(16);
  // RFC 4122 version 4, so tools that print it as a GUID show a well-formed one.
  id[6] = (id[6]! & 0x0f) | 0x40;
  id[8] = (id[8]! & 0x3f) | 0x80;
  return id;
}

export function formatUuid(id: Buffer): string {
  const h = id.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
