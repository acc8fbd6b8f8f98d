/**
 * streamOptimized markers: every grain is preceded by (lba u64, compressed size u32); metadata
 * (grain tables, grain directory, footer, end of stream) by a sector-sized marker whose size
 * field is 0 and whose type says what follows.
 */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;

/** lba u64 + size u32: the fixed part in front of every compressed grain. */
export const GRAIN_MARKER_BYTES = 12;

export function metadataMarker(type: number, sectors: number): Buffer {
  const b = Buffer.alloc(512);
  b.writeBigUInt64LE(BigInt(sectors), 0);
  b.writeUInt32LE(0, 8);
  b.writeUInt32LE(type, 12);
  return b;
}
