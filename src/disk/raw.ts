/**
 * A raw image file as a BlockDevice: byte i of the disk is byte i of the file. Used for raw
 * sources and targets of convert and for raw disks served over NBD.
 */
import type { FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { run } from '../core/process.js';
import type { BlockDevice, Extent, WriteOptions } from './block-device.js';
import { vhdError } from './vhd/errors.js';
import { openImageFile, readInto, writeAt } from './vhd/io.js';
import { checkRange, checkWritable } from './io-range.js';

const ZERO_CHUNK = 4 * 1024 * 1024;

export class RawImage implements BlockDevice {
  private closed = false;
  /** Holes of a sparse file opened read-only (sorted, from SEEK_HOLE via qemu-img map). */
  private holes: Array<[number, number]> | null = null;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  /**
   * `mapHoles`: for a sparse file opened read-only, learn where its holes are so blockStatus
   * reports them and copy loops skip them unread. Node has no SEEK_DATA/SEEK_HOLE, so we ask
   * `qemu-img map`, once; a file without holes (allocated blocks cover it) skips the call.
   */
  static async open(path: string, opts: { write?: boolean; mapHoles?: boolean } = {}): Promise<RawImage> {
    const abs = resolve(path);
    const fh: FileHandle = await openImageFile(abs, opts.write ? 'r+' : 'r');
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw vhdError('FD_DISK_BAD_FORMAT', `${abs} is not a regular file`);
    }
    const img = new RawImage(abs, fh, st.size, !opts.write);
    if (opts.mapHoles && !opts.write && st.blocks * 512 < st.size) {
      const res = await run('qemu-img', ['map', '-f', 'raw', '--output=json', abs], { allowFail: true });
      if (res.code === 0) {
        const map = JSON.parse(res.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
        img.holes = map.filter((e) => !e.data && e.zero).map((e) => [e.start, e.start + e.length]);
      }
    }
    return img;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.allocUnsafe(length);
    await readInto(this.fh, out, 0, length, offset, 'the raw image');
    return out;
  }

  /** Reads into a caller's buffer (copy loops reuse a few big buffers instead of allocating). */
  async readInto(into: Buffer, offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    await readInto(this.fh, into, 0, length, offset, 'the raw image');
    return into.subarray(0, length);
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    await writeAt(this.fh, offset, data);
    if (opts.fua) await this.fh.datasync();
  }

  async writeZeroes(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    const zeros = Buffer.alloc(Math.min(length, ZERO_CHUNK));
    for (let p = offset; p < offset + length; p += ZERO_CHUNK) {
      await writeAt(this.fh, p, zeros.subarray(0, Math.min(ZERO_CHUNK, offset + length - p)));
    }
    if (opts.fua) await this.fh.datasync();
  }

  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.fh.sync();
  }

  /** All data, except the holes learned at open (see `mapHoles`). */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const end = offset + length;
    const out: Extent[] = [];
    let pos = offset;
    for (const [hs, he] of this.holes ?? []) {
      if (he <= pos) continue;
      if (hs >= end) break;
      if (hs > pos) out.push({ offset: pos, length: hs - pos, hole: false, zero: false });
      const e = Math.min(he, end);
      out.push({ offset: Math.max(hs, pos), length: e - Math.max(hs, pos), hole: true, zero: true });
      pos = e;
    }
    if (pos < end) out.push({ offset: pos, length: end - pos, hole: false, zero: false });
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private checkRange(offset: number, length: number): void {
    checkRange(this, this.closed, offset, length);
  }

  private checkWritable(): void {
    checkWritable(this);
  }
}
