/**
 * A raw image file as a BlockDevice: byte i of the disk is byte i of the file. Used for raw
 * sources and targets of convert and for raw disks served over NBD.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isErrno } from '../core/errors.js';
import type { BlockDevice, Extent, WriteOptions } from './block-device.js';
import { vhdError } from './vhd/errors.js';
import { readInto, writeAt } from './vhd/io.js';

const ZERO_CHUNK = 4 * 1024 * 1024;

export class RawImage implements BlockDevice {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  static async open(path: string, opts: { write?: boolean } = {}): Promise<RawImage> {
    const abs = resolve(path);
    let fh: FileHandle;
    try {
      fh = await open(abs, opts.write ? 'r+' : 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw vhdError('FD_DISK_NOT_FOUND', `${abs} does not exist`, 'check the path', err);
      throw err;
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw vhdError('FD_DISK_BAD_FORMAT', `${abs} is not a regular file`);
    }
    return new RawImage(abs, fh, st.size, !opts.write);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    const out = Buffer.allocUnsafe(length);
    await readInto(this.fh, out, 0, length, offset, 'the raw image');
    return out;
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

  /** Node cannot ask for holes (no SEEK_DATA), so a raw file reports all data. */
  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    return length ? [{ offset, length, hole: false, zero: false }] : [];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  private checkRange(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.sizeBytes
    ) {
      throw vhdError(
        'FD_DISK_OUT_OF_RANGE',
        `I/O at ${offset}+${length} is outside the disk (${this.sizeBytes} bytes)`,
      );
    }
    if (this.closed) throw new Error(`${this.path} is closed`);
  }

  private checkWritable(): void {
    if (this.readOnly) throw vhdError('FD_DISK_READ_ONLY', `${this.path} is open read-only`);
  }
}
