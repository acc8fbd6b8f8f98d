/**
 * The 1024-byte dynamic disk header ("cxsparse") of dynamic and differencing VHDs: where the
 * BAT is, the block size, and for differencing disks who the parent is (UUID, timestamp, name
 * and up to eight parent locators).
 */
import { vhdError, REPAIR_HINT } from './errors.js';
import { vhdChecksum } from './footer.js';

const COOKIE = 0;
const DATA_OFFSET = 8;
const TABLE_OFFSET = 16;
const HEADER_VERSION = 24;
const MAX_TABLE_ENTRIES = 28;
const BLOCK_SIZE = 32;
const CHECKSUM = 36;
const PARENT_UUID = 40;
const PARENT_TIMESTAMP = 56;
const PARENT_NAME = 64;
const PARENT_NAME_BYTES = 512;
const LOCATORS = 576;
const LOCATOR_SIZE = 24;
const LOCATOR_COUNT = 8;

export const HEADER_SIZE = 1024;
export const HEADER_COOKIE = 'cxsparse';
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;

export interface ParentLocator {
  /** "W2ku" (absolute, UTF-16LE), "W2ru" (relative, UTF-16LE), "MacX" (file URL, UTF-8), ... */
  platformCode: string;
  /** As stored: the spec says sectors, Windows writes bytes; see locatorSpaceBytes. */
  dataSpace: number;
  dataLength: number;
  dataOffset: number;
}

export interface DynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUuid: Buffer;
  parentTimestamp: number;
  parentName: string;
  /** Only the entries in use (platform code not zero), in slot order. */
  locators: ParentLocator[];
}

export function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

export function headerChecksumOk(buf: Buffer): boolean {
  return vhdChecksum(buf, CHECKSUM) === buf.readUInt32BE(CHECKSUM);
}

/** Windows stores the locator's reserved space in bytes, the spec in sectors: a value below 512 can only be sectors. */
export function locatorSpaceBytes(loc: ParentLocator): number {
  return loc.dataSpace < 512 ? loc.dataSpace * 512 : loc.dataSpace;
}

export function parseDynamicHeader(buf: Buffer, verifyChecksum = true): DynamicHeader {
  if (buf.toString('latin1', COOKIE, COOKIE + 8) !== HEADER_COOKIE) {
    throw vhdError('FD_VHD_BAD_COOKIE', 'dynamic disk header is not "cxsparse"', REPAIR_HINT);
  }
  const checksum = buf.readUInt32BE(CHECKSUM);
  if (verifyChecksum && vhdChecksum(buf, CHECKSUM) !== checksum) {
    throw vhdError(
      'FD_VHD_BAD_CHECKSUM',
      `dynamic disk header checksum is wrong (stored 0x${checksum.toString(16)}, computed 0x${vhdChecksum(buf, CHECKSUM).toString(16)})`,
      'the header cannot be rebuilt without guessing; restore the image from a backup',
    );
  }
  const table = buf.readBigUInt64BE(TABLE_OFFSET);
  if (table > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw vhdError('FD_VHD_BAD_HEADER', `BAT offset ${table} is absurd`);
  }
  const blockSize = buf.readUInt32BE(BLOCK_SIZE);
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw vhdError(
      'FD_VHD_BAD_BLOCK_SIZE',
      `block size ${blockSize} is not a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE} bytes`,
    );
  }
  const locators: ParentLocator[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = LOCATORS + i * LOCATOR_SIZE;
    const code = buf.readUInt32BE(at);
    if (code === 0) continue;
    const off = buf.readBigUInt64BE(at + 16);
    locators.push({
      platformCode: buf.toString('latin1', at, at + 4),
      dataSpace: buf.readUInt32BE(at + 4),
      dataLength: buf.readUInt32BE(at + 8),
      dataOffset: off > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(off),
    });
  }
  return {
    tableOffset: Number(table),
    headerVersion: buf.readUInt32BE(HEADER_VERSION),
    maxTableEntries: buf.readUInt32BE(MAX_TABLE_ENTRIES),
    blockSize,
    checksum,
    parentUuid: Buffer.from(buf.subarray(PARENT_UUID, PARENT_UUID + 16)),
    parentTimestamp: buf.readUInt32BE(PARENT_TIMESTAMP),
    parentName: decodeUtf16(buf.subarray(PARENT_NAME, PARENT_NAME + PARENT_NAME_BYTES), 'be'),
    locators,
  };
}

export function serializeDynamicHeader(h: DynamicHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  buf.write(HEADER_COOKIE, COOKIE, 'latin1');
  // The spec says 0xFFFFFFFF here; Microsoft's tools expect all 64 bits set.
  buf.writeBigUInt64BE(0xffffffffffffffffn, DATA_OFFSET);
  buf.writeBigUInt64BE(BigInt(h.tableOffset), TABLE_OFFSET);
  buf.writeUInt32BE(h.headerVersion, HEADER_VERSION);
  buf.writeUInt32BE(h.maxTableEntries, MAX_TABLE_ENTRIES);
  buf.writeUInt32BE(h.blockSize, BLOCK_SIZE);
  h.parentUuid.copy(buf, PARENT_UUID, 0, 16);
  buf.writeUInt32BE(h.parentTimestamp >>> 0, PARENT_TIMESTAMP);
  const name = encodeUtf16(h.parentName, 'be');
  name.copy(buf, PARENT_NAME, 0, Math.min(name.length, PARENT_NAME_BYTES - 2));
  h.locators.slice(0, LOCATOR_COUNT).forEach((loc, i) => {
    const at = LOCATORS + i * LOCATOR_SIZE;
    buf.write(loc.platformCode.padEnd(4, '\0').slice(0, 4), at, 'latin1');
    buf.writeUInt32BE(loc.dataSpace, at + 4);
    buf.writeUInt32BE(loc.dataLength, at + 8);
    buf.writeBigUInt64BE(BigInt(loc.dataOffset), at + 16);
  });
  buf.writeUInt32BE(vhdChecksum(buf, CHECKSUM), CHECKSUM);
  return buf;
}

export function decodeUtf16(bytes: Buffer, endian: 'be' | 'le'): string {
  const even = bytes.subarray(0, bytes.length & ~1);
  const le = endian === 'le' ? Buffer.from(even) : Buffer.from(even).swap16();
  const text = le.toString('utf16le');
  const nul = text.indexOf('\0');
  return nul >= 0 ? text.slice(0, nul) : text;
}

export function encodeUtf16(text: string, endian: 'be' | 'le'): Buffer {
  const le = Buffer.from(text, 'utf16le');
  return endian === 'le' ? le : le.swap16();
}
