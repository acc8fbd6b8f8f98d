/**
 * Writes a streamOptimized VMDK (what OVAs carry) from any readable disk, in one forward pass:
 * header with GD_AT_END, descriptor, one compressed grain per non-zero 64 KiB, a grain table
 * after every 512 grains, then the grain directory, the footer and the end-of-stream marker.
 * Deflate runs on libuv's pool, several grains at a time; the output is written in order.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { deflate } from 'node:zlib';
import { promisify } from 'node:util';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { streamOptimizedDescriptor } from './descriptor.js';
import {
  COMPRESSION_DEFLATE,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_VALID_NEWLINE,
  SECTOR,
  serializeSparseHeader,
  type SparseHeader,
} from './header.js';
import { MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT, metadataMarker } from './markers.js';

const deflateAsync = promisify(deflate);

/** What the writer reads from: a BlockDevice fits, so does a raw file opened by openRawSource. */
export interface DiskSource {
  readonly sizeBytes: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** Optional allocation map: holes are skipped without reading them. */
  blockStatus?(offset: number, length: number): Promise<{ offset: number; length: number; zero: boolean }[]>;
}

export interface WriteVmdkOptions {
  grainSectors?: number;
  compressionLevel?: number;
  parallel?: number;
  adapterType?: string;
  onProgress?(doneBytes: number, totalBytes: number): void;
  signal?: AbortSignal;
}

export interface WriteVmdkResult {
  fileSizeBytes: number;
  sha256: string;
  grains: number;
  capacityBytes: number;
}

const GTES_PER_GT = 512;
const DESCRIPTOR_SECTORS = 20;
const OVERHEAD_SECTORS = 128;

/** Writes `src` as a streamOptimized VMDK at `path` (temp file + rename: never half-made). */
export function writeStreamOptimizedVmdk(
  src: DiskSource,
  path: string,
  opts: WriteVmdkOptions = {},
): Promise<WriteVmdkResult> {
  return produceFileAtomic(path, (tmp) => writeTo(src, tmp, basename(path), opts));
}

async function writeTo(src: DiskSource, tmp: string, name: string, opts: WriteVmdkOptions): Promise<WriteVmdkResult> {
  const grainSectors = opts.grainSectors ?? 128;
  const grainBytes = grainSectors * SECTOR;
  const capacitySectors = Math.ceil(src.sizeBytes / SECTOR);
  const numGrains = Math.ceil(capacitySectors / grainSectors);
  const numGts = Math.ceil(numGrains / GTES_PER_GT);
  const header: SparseHeader = {
    version: 3,
    flags: FLAG_VALID_NEWLINE | FLAG_COMPRESSED | FLAG_MARKERS,
    capacitySectors,
    grainSectors,
    descriptorOffsetSectors: 1,
    descriptorSizeSectors: DESCRIPTOR_SECTORS,
    gtesPerGt: GTES_PER_GT,
    rgdOffsetSectors: 0,
    gdOffsetSectors: undefined,
    overheadSectors: OVERHEAD_SECTORS,
    compressAlgorithm: COMPRESSION_DEFLATE,
  };

  const fh = await open(tmp, 'w');
  const hash = createHash('sha256');
  let pos = 0;
  const emit = async (buf: Buffer): Promise<void> => {
    hash.update(buf);
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
      done += bytesWritten;
    }
    pos += buf.length;
  };
  const padToSector = (len: number): number => Math.ceil(len / SECTOR) * SECTOR;
  let grains = 0;

  try {
    const desc = Buffer.from(streamOptimizedDescriptor(capacitySectors, name, opts.adapterType));
    if (desc.length > DESCRIPTOR_SECTORS * SECTOR) throw new Error('descriptor does not fit its reserved sectors');
    const lead = Buffer.alloc(OVERHEAD_SECTORS * SECTOR);
    serializeSparseHeader(header).copy(lead, 0);
    desc.copy(lead, SECTOR);
    await emit(lead);

    const gd = new Uint32Array(numGts);
    let gt = new Uint32Array(GTES_PER_GT);
    let gtUsed = false;
    const level = opts.compressionLevel ?? 6;
    const parallel = Math.max(1, opts.parallel ?? 4);
    const zeroRanges = await zeroMap(src);

    // Compression runs ahead by `parallel` grains; output order stays the grain order.
    const pending: { index: number; data: Promise<Buffer | undefined> }[] = [];
    const produce = (index: number): Promise<Buffer | undefined> => {
      const off = index * grainBytes;
      const len = Math.min(grainBytes, src.sizeBytes - off);
      if (zeroRanges.covers(off, len)) return Promise.resolve(undefined);
      return src.read(off, len).then((data) => {
        if (isAllZero(data)) return undefined;
        const full = data.length === grainBytes ? data : Buffer.concat([data, Buffer.alloc(grainBytes - data.length)]);
        return deflateAsync(full, { level });
      });
    };
    const flushGt = async (gtIndex: number): Promise<void> => {
      if (!gtUsed) return;
      await emit(metadataMarker(MARKER_GT, (GTES_PER_GT * 4) / SECTOR));
      gd[gtIndex] = pos / SECTOR;
      await emit(Buffer.from(gt.buffer, gt.byteOffset, gt.byteLength));
      gt = new Uint32Array(GTES_PER_GT);
      gtUsed = false;
    };

    let next = 0;
    for (let i = 0; i < numGrains; i++) {
      while (next < numGrains && next < i + parallel) {
        pending.push({ index: next, data: produce(next) });
        next++;
      }
      const { index, data } = pending.shift()!;
      const compressed = await data;
      if (opts.signal?.aborted) throw new Error('cancelled');
      if (compressed) {
        const marker = Buffer.alloc(12);
        marker.writeBigUInt64LE(BigInt(index * grainSectors), 0);
        marker.writeUInt32LE(compressed.length, 8);
        const total = padToSector(12 + compressed.length);
        const rec = Buffer.alloc(total);
        marker.copy(rec, 0);
        compressed.copy(rec, 12);
        gt[index % GTES_PER_GT] = pos / SECTOR;
        gtUsed = true;
        await emit(rec);
        grains++;
      }
      if (index % GTES_PER_GT === GTES_PER_GT - 1 || index === numGrains - 1) {
        await flushGt(Math.floor(index / GTES_PER_GT));
      }
      opts.onProgress?.(Math.min((index + 1) * grainBytes, src.sizeBytes), src.sizeBytes);
    }

    const gdBytes = padToSector(numGts * 4);
    await emit(metadataMarker(MARKER_GD, gdBytes / SECTOR));
    const gdOffset = pos / SECTOR;
    const gdBuf = Buffer.alloc(gdBytes);
    Buffer.from(gd.buffer, gd.byteOffset, gd.byteLength).copy(gdBuf);
    await emit(gdBuf);
    await emit(metadataMarker(MARKER_FOOTER, 1));
    await emit(serializeSparseHeader({ ...header, gdOffsetSectors: gdOffset }));
    await emit(metadataMarker(MARKER_EOS, 0));
  } finally {
    await fh.close();
  }
  return { fileSizeBytes: pos, sha256: hash.digest('hex'), grains, capacityBytes: capacitySectors * SECTOR };
}

function isAllZero(buf: Buffer): boolean {
  const zero = Buffer.alloc(Math.min(buf.length, 65536));
  for (let off = 0; off < buf.length; off += zero.length) {
    const len = Math.min(zero.length, buf.length - off);
    if (buf.compare(zero, 0, len, off, off + len) !== 0) return false;
  }
  return true;
}

/** Known-zero ranges from the source's allocation map, so holes are never read. */
async function zeroMap(src: DiskSource): Promise<{ covers(off: number, len: number): boolean }> {
  if (!src.blockStatus) return { covers: () => false };
  const extents = (await src.blockStatus(0, src.sizeBytes)).filter((e) => e.zero);
  // Grains are asked for in increasing order, so one cursor walks the extents once.
  let i = 0;
  return {
    covers(off, len) {
      while (i < extents.length && extents[i]!.offset + extents[i]!.length <= off) i++;
      const e = extents[i];
      return e !== undefined && e.offset <= off && e.offset + e.length >= off + len;
    },
  };
}

/** A raw image file as a DiskSource (reads past the end come back as zeros). */
export async function openRawSource(path: string): Promise<DiskSource & { close(): Promise<void> }> {
  const fh = await open(path, 'r');
  const { size } = await fh.stat();
  return {
    sizeBytes: size,
    async read(offset, length) {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}
