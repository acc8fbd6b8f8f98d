/**
 * Random access to a sparse VMDK extent (streamOptimized or monolithicSparse) as a read-only
 * BlockDevice, through its grain directory and tables: what inspect, a checker, or a copy that
 * needs to seek (rather than stream) uses. streamOptimized files usually keep the directory at
 * the end (GD_AT_END); its real offset is in the footer, one sector before end-of-stream.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { inflateRawSync, inflateSync } from 'node:zlib';
import { FdError } from '../../core/errors.js';
import type { BlockDevice, Extent } from '../block-device.js';
import { FLAG_COMPRESSED, FLAG_MARKERS, SECTOR, parseSparseHeader, type SparseHeader } from './header.js';

const CACHE_GRAINS = 16;

export class VmdkImage implements BlockDevice {
  readonly readOnly = true;
  private readonly cache = new Map<number, Buffer>();

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly header: SparseHeader,
    /** Sector offset of each grain's data (or marker); 0 = never written (reads as zeros). */
    private readonly grains: Uint32Array,
    readonly fileSizeBytes: number,
  ) {}

  get sizeBytes(): number {
    return this.header.capacitySectors * SECTOR;
  }

  private get grainBytes(): number {
    return this.header.grainSectors * SECTOR;
  }

  static async open(path: string): Promise<VmdkImage> {
    const fh = await open(path, 'r');
    try {
      const { size } = await fh.stat();
      const head = await readExact(fh, 0, SECTOR, path);
      let header = parseSparseHeader(head, path);
      let gdSector = header.gdOffsetSectors;
      if (gdSector === undefined) {
        // GD_AT_END: the footer (a header copy with the real offset) sits before the EOS marker.
        if (size < 3 * SECTOR) throw bad(path, 'too short to hold a footer');
        const footer = parseSparseHeader(await readExact(fh, size - 2 * SECTOR, SECTOR, path), `${path} footer`);
        if (footer.gdOffsetSectors === undefined) throw bad(path, 'the footer does not locate the grain directory');
        header = { ...header, gdOffsetSectors: footer.gdOffsetSectors };
        gdSector = footer.gdOffsetSectors;
      }
      const grainSectors = header.grainSectors;
      const numGrains = Math.ceil(header.capacitySectors / grainSectors);
      const numGts = Math.ceil(numGrains / header.gtesPerGt);
      const gdBytes = numGts * 4;
      if (gdSector * SECTOR + gdBytes > size) throw bad(path, 'the grain directory lies beyond the end of the file');
      const gd = await readExact(fh, gdSector * SECTOR, gdBytes, path);
      const grains = new Uint32Array(numGrains);
      const gtBytes = header.gtesPerGt * 4;
      for (let t = 0; t < numGts; t++) {
        const gtSector = gd.readUInt32LE(t * 4);
        if (gtSector === 0) continue;
        if (gtSector * SECTOR + gtBytes > size) throw bad(path, `grain table ${t} lies beyond the end of the file`);
        const gt = await readExact(fh, gtSector * SECTOR, gtBytes, path);
        for (let e = 0; e < header.gtesPerGt && t * header.gtesPerGt + e < numGrains; e++) {
          const g = gt.readUInt32LE(e * 4);
          // 1 is the "zeroed grain" marker some writers use: reads as zeros like 0.
          if (g > 1 && g * SECTOR >= size)
            throw bad(path, `grain ${t * header.gtesPerGt + e} points beyond the end of the file`);
          grains[t * header.gtesPerGt + e] = g > 1 ? g : 0;
        }
      }
      return new VmdkImage(fh, path, header, grains, size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private async grain(index: number): Promise<Buffer | undefined> {
    const sector = this.grains[index]!;
    if (sector === 0) return undefined;
    const hit = this.cache.get(index);
    if (hit) return hit;
    const compressed = (this.header.flags & FLAG_COMPRESSED) !== 0;
    let data: Buffer;
    if (!compressed) {
      data = await readExact(this.fh, sector * SECTOR, this.grainBytes, this.path, true);
    } else {
      const markers = (this.header.flags & FLAG_MARKERS) !== 0;
      const pre = await readExact(this.fh, sector * SECTOR, 12, this.path);
      const lba = Number(pre.readBigUInt64LE(0));
      const size = markers ? pre.readUInt32LE(8) : pre.readUInt32LE(0);
      if (markers && lba !== index * this.header.grainSectors) {
        throw new FdError(
          'FD_VMDK_BAD_GRAIN',
          `${this.path}: grain table entry ${index} points at the grain for sector ${lba}`,
        );
      }
      if (size === 0 || size > this.grainBytes * 2 + 1024) {
        throw new FdError('FD_VMDK_BAD_GRAIN', `${this.path}: grain ${index} has compressed size ${size}`);
      }
      const body = await readExact(this.fh, sector * SECTOR + (markers ? 12 : 4), size, this.path);
      try {
        data = inflateSync(body, { chunkSize: this.grainBytes + 1024 });
      } catch {
        try {
          data = inflateRawSync(body, { chunkSize: this.grainBytes + 1024 });
        } catch (cause) {
          throw new FdError('FD_VMDK_BAD_GRAIN', `${this.path}: grain ${index} does not inflate`, { cause });
        }
      }
    }
    if (this.cache.size >= CACHE_GRAINS) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(index, data);
    return data;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new FdError(
        'FD_VMDK_OUT_OF_RANGE',
        `read of ${length} bytes at ${offset} is outside the ${this.sizeBytes}-byte disk`,
      );
    }
    const out = Buffer.alloc(length);
    let pos = offset;
    while (pos < offset + length) {
      const g = Math.floor(pos / this.grainBytes);
      const inGrain = pos - g * this.grainBytes;
      const n = Math.min(offset + length - pos, this.grainBytes - inGrain);
      const data = await this.grain(g);
      if (data) data.copy(out, pos - offset, inGrain, Math.min(data.length, inGrain + n));
      pos += n;
    }
    return out;
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const g = Math.floor(pos / this.grainBytes);
      const n = Math.min(end - pos, (g + 1) * this.grainBytes - pos);
      const hole = this.grains[g] === 0;
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += n;
      else out.push({ offset: pos, length: n, hole, zero: hole });
      pos += n;
    }
    return out;
  }

  async write(): Promise<void> {
    throw readOnly(this.path);
  }
  async writeZeroes(): Promise<void> {
    throw readOnly(this.path);
  }
  async trim(): Promise<void> {
    throw readOnly(this.path);
  }
  async flush(): Promise<void> {}
  async close(): Promise<void> {
    await this.fh.close();
  }
}

function readOnly(path: string): FdError {
  return new FdError('FD_VMDK_READ_ONLY', `${path} is opened read-only`, {
    hint: 'VMDKs are converted, not written in place; convert to VHD first',
  });
}

function bad(path: string, what: string): FdError {
  return new FdError('FD_VMDK_BAD_HEADER', `${path}: ${what}`, { hint: 'the file is truncated or corrupt' });
}

async function readExact(
  fh: FileHandle,
  pos: number,
  len: number,
  path: string,
  zeroFillTail = false,
): Promise<Buffer> {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  if (done < len && !zeroFillTail) {
    throw new FdError('FD_VMDK_TRUNCATED', `${path} ends at byte ${pos + done}, inside data that starts at ${pos}`, {
      hint: 'the file is incomplete: copy it again',
    });
  }
  return buf;
}
