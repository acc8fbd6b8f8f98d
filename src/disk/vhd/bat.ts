/**
 * The block allocation table: one big-endian uint32 per block, the sector where the block's
 * bitmap starts, or all ones when the block is not allocated. Also the per-block sector bitmap
 * arithmetic (bit 7 of byte 0 is the block's first sector).
 */
import { roundUp, SECTOR } from './io.js';

export const UNUSED = 0xffffffff;

export function parseBat(buf: Buffer, entries: number): Uint32Array {
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = buf.readUInt32BE(i * 4);
  return bat;
}

export function serializeBat(bat: Uint32Array): Buffer {
  const buf = Buffer.alloc(roundUp(bat.length * 4, SECTOR), 0xff);
  for (let i = 0; i < bat.length; i++) buf.writeUInt32BE(bat[i]!, i * 4);
  return buf;
}

export function batBytes(entries: number): number {
  return roundUp(entries * 4, SECTOR);
}

/** Bytes of the sector bitmap that precedes each block, padded to whole sectors. */
export function bitmapBytes(blockSize: number): number {
  return roundUp(Math.ceil(blockSize / SECTOR / 8), SECTOR);
}

export function bitSet(bitmap: Buffer, sector: number): boolean {
  return (bitmap[sector >> 3]! & (0x80 >> (sector & 7))) !== 0;
}

export function setBits(bitmap: Buffer, first: number, count: number): boolean {
  let changed = false;
  for (let s = first; s < first + count; s++) {
    const mask = 0x80 >> (s & 7);
    if ((bitmap[s >> 3]! & mask) === 0) {
      bitmap[s >> 3] = bitmap[s >> 3]! | mask;
      changed = true;
    }
  }
  return changed;
}

/** True when every sector of the block (sectorsPerBlock bits) is present. */
export function allSet(bitmap: Buffer, sectorsPerBlock: number): boolean {
  const full = sectorsPerBlock >> 3;
  for (let i = 0; i < full; i++) if (bitmap[i] !== 0xff) return false;
  for (let s = full * 8; s < sectorsPerBlock; s++) if (!bitSet(bitmap, s)) return false;
  return true;
}

export function noneSet(bitmap: Buffer, sectorsPerBlock: number): boolean {
  const bytes = Math.ceil(sectorsPerBlock / 8);
  for (let i = 0; i < bytes; i++) if (bitmap[i] !== 0) return false;
  return true;
}

/** Runs of equal bits in [first, first+count): [startSector, length, present]. */
export function bitRuns(bitmap: Buffer, first: number, count: number): Array<[number, number, boolean]> {
  const runs: Array<[number, number, boolean]> = [];
  let s = first;
  const end = first + count;
  while (s < end) {
    const v = bitSet(bitmap, s);
    let e = s + 1;
    while (e < end && bitSet(bitmap, e) === v) e++;
    runs.push([s, e - s, v]);
    s = e;
  }
  return runs;
}
