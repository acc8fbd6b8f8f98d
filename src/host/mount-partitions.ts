/**
 * Finding partitions on a disk for `disk mount --partition N`. We read the table ourselves and
 * hand losetup an offset and size limit, because `losetup -P` depends on the kernel's partition
 * parsers, and the kernels we run on can be built without them (CONFIG_MSDOS_PARTITION and
 * CONFIG_EFI_PARTITION both unset on the test machines, so -P finds nothing).
 * Understands MBR primary partitions (numbered 1-4 by slot) and GPT (numbered by entry).
 */
import { open } from 'node:fs/promises';
import { FdError } from '../core/errors.js';

export interface Partition {
  /** 1-based, as Linux numbers them (MBR slot, GPT entry index). */
  number: number;
  offsetBytes: number;
  sizeBytes: number;
  /** MBR type byte as hex ("83") or GPT type GUID. */
  type: string;
}

const SECTOR = 512;
const MBR_ENTRIES = 446;
const GPT_PROTECTIVE = 0xee;
const EXTENDED = new Set([0x05, 0x0f, 0x85]);
/** Past this many GPT entries the table is corrupt, not big (the spec minimum is 128). */
const MAX_GPT_ENTRIES = 4096;

/** The partitions of the disk in `path` (a raw view, e.g. the FUSE export), or [] if none. */
export async function readPartitions(path: string): Promise<Partition[]> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const b = Buffer.alloc(length);
      await fh.read(b, 0, length, offset);
      return b;
    };
    const mbr = await read(0, SECTOR);
    if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return [];
    const entries = [0, 1, 2, 3].map((i) => {
      const e = MBR_ENTRIES + 16 * i;
      return { slot: i + 1, type: mbr[e + 4]!, lba: mbr.readUInt32LE(e + 8), count: mbr.readUInt32LE(e + 12) };
    });
    if (entries.some((e) => e.type === GPT_PROTECTIVE)) return await readGpt(read, size);
    const out: Partition[] = [];
    for (const e of entries) {
      if (e.type === 0 || e.count === 0 || EXTENDED.has(e.type)) continue;
      const p = { number: e.slot, offsetBytes: e.lba * SECTOR, sizeBytes: e.count * SECTOR, type: hex(e.type) };
      // A boot sector that merely ends in 55aa (an unpartitioned FAT or ext volume) has junk
      // here; entries that do not fit the disk mean "not a partition table".
      if (p.offsetBytes === 0 || p.offsetBytes + p.sizeBytes > size) return [];
      out.push(p);
    }
    return out;
  } finally {
    await fh.close();
  }
}

async function readGpt(read: (offset: number, length: number) => Promise<Buffer>, size: number): Promise<Partition[]> {
  const h = await read(SECTOR, SECTOR);
  if (h.toString('latin1', 0, 8) !== 'EFI PART') {
    throw new FdError('FD_MOUNT_BAD_PARTITION_TABLE', 'the disk has a protective MBR but no GPT header', {
      hint: 'repair the partition table (e.g. with gdisk) or mount without --partition',
    });
  }
  const entriesLba = Number(h.readBigUInt64LE(72));
  const count = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (count > MAX_GPT_ENTRIES || entrySize < 128 || entrySize > 4096 || entriesLba * SECTOR >= size) {
    throw new FdError(
      'FD_MOUNT_BAD_PARTITION_TABLE',
      `the GPT header is corrupt (${count} entries of ${entrySize} bytes)`,
    );
  }
  const table = await read(entriesLba * SECTOR, count * entrySize);
  const out: Partition[] = [];
  for (let i = 0; i < count; i++) {
    const e = table.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (last < first || (last + 1) * SECTOR > size) continue;
    out.push({ number: i + 1, offsetBytes: first * SECTOR, sizeBytes: (last - first + 1) * SECTOR, type: guid(e) });
  }
  return out;
}

/** Chooses what to mount: the partition asked for, the only partition, or the whole disk. */
export function choosePartition(parts: Partition[], wanted: number | undefined): Partition | null {
  const nums = parts.map((p) => p.number).join(', ');
  if (wanted === undefined) {
    if (parts.length === 0) return null;
    if (parts.length === 1) return parts[0]!;
    throw new FdError('FD_MOUNT_PARTITION_REQUIRED', `the disk has ${parts.length} partitions (${nums})`, {
      hint: 'pass --partition N',
    });
  }
  const p = parts.find((x) => x.number === wanted);
  if (!p) {
    throw new FdError('FD_MOUNT_NO_PARTITION', `the disk has no partition ${wanted} (it has: ${nums || 'none'})`, {
      hint: parts.length ? 'pass one of the partitions listed' : 'leave out --partition to mount the whole disk',
    });
  }
  return p;
}

const hex = (n: number): string => n.toString(16).padStart(2, '0');

function guid(e: Buffer): string {
  const b = e.subarray(0, 16);
  const le = (s: number, n: number) => [...b.subarray(s, s + n)].reverse().map(hex).join('');
  const be = (s: number, n: number) => [...b.subarray(s, s + n)].map(hex).join('');
  return `${le(0, 4)}-${le(4, 2)}-${le(6, 2)}-${be(8, 2)}-${be(10, 6)}`;
}
