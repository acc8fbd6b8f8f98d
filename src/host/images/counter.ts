/**
 * The tiny guest's durable counter on disk. The guest's fdprobe writes one 4 KiB record at a
 * fixed offset of its root disk, outside the ext4 filesystem (which ends at 48 MiB), with
 * O_DIRECT|O_DSYNC and fdatasync, and prints FD-COUNTER n only after that. The host reads the
 * record through any BlockDevice (the VHD engine, NBD, a raw file), with no filesystem code:
 * after a failover, `counter on disk >= last FD-COUNTER seen` is the check that nothing
 * acknowledged was lost.
 *
 * Record (little-endian): "FDCOUNT1" (8 bytes), n (u64), ~n (u64), zeros to 4096. The ~n copy
 * tells a real record from a torn or foreign one. Layout shared with guest/fdprobe.c.
 */
import { open } from 'node:fs/promises';
import { FdError } from '../../core/errors.js';

export const COUNTER_OFFSET_BYTES = 56 * 1024 * 1024;
export const COUNTER_RECORD_BYTES = 4096;
const MAGIC = 'FDCOUNT1';

export interface CounterReader {
  read(offset: number, length: number): Promise<Buffer>;
}

/** The counter in a record, or null when the region holds no valid record (never written). */
export function parseCounterRecord(rec: Buffer): bigint | null {
  if (rec.length < 24 || rec.toString('latin1', 0, 8) !== MAGIC) return null;
  const n = rec.readBigUInt64LE(8);
  const inv = rec.readBigUInt64LE(16);
  return (n ^ inv) === 0xffffffffffffffffn ? n : null;
}

export function counterRecord(n: bigint): Buffer {
  const rec = Buffer.alloc(COUNTER_RECORD_BYTES);
  rec.write(MAGIC, 0, 'latin1');
  rec.writeBigUInt64LE(n, 8);
  rec.writeBigUInt64LE(n ^ 0xffffffffffffffffn, 16);
  return rec;
}

/** Reads the counter through a block device (an open VHD, an NBD client, ...). */
export async function readCounter(dev: CounterReader, offsetBytes = COUNTER_OFFSET_BYTES): Promise<bigint | null> {
  return parseCounterRecord(await dev.read(offsetBytes, COUNTER_RECORD_BYTES));
}

/** Reads the counter from a raw disk image file. */
export async function readCounterFromRaw(path: string, offsetBytes = COUNTER_OFFSET_BYTES): Promise<bigint | null> {
  const fh = await open(path, 'r').catch((err: unknown) => {
    throw new FdError('FD_IMAGE_NOT_FOUND', `cannot open disk image ${path}`, { cause: err });
  });
  try {
    const buf = Buffer.alloc(COUNTER_RECORD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, offsetBytes);
    return parseCounterRecord(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}
