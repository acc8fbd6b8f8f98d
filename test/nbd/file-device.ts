/**
 * A small raw-file BlockDevice for the NBD tests, independent of the disk engine: it tracks
 * which 64 KiB chunks were ever written so BLOCK_STATUS and structured reads have holes to
 * report, and it counts flushes and FUA writes so tests can see durability requests arrive.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockDevice, Extent, WriteOptions } from '../../src/disk/block-device.js';

const CHUNK = 64 * 1024;

export class FileDevice implements BlockDevice {
  readonly allocated = new Set<number>();
  flushes = 0;
  reads = 0;
  /** Reads covering this byte fail with EIO (a bad sector). */
  badByte: number | null = null;
  fuaWrites = 0;
  /** Called before every write reaches the file (tests delay writes with it). */
  beforeWrite: ((offset: number, length: number) => Promise<void>) | null = null;

  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
    readonly readOnly: boolean,
  ) {}

  static async create(path: string, sizeBytes: number): Promise<FileDevice> {
    const fh = await open(path, 'w+');
    await fh.truncate(sizeBytes);
    return new FileDevice(fh, sizeBytes, false);
  }

  static async open(path: string, opts: { readOnly?: boolean } = {}): Promise<FileDevice> {
    const fh = await open(path, opts.readOnly ? 'r' : 'r+');
    const dev = new FileDevice(fh, (await fh.stat()).size, opts.readOnly === true);
    for (let c = 0; c * CHUNK < dev.sizeBytes; c++) dev.allocated.add(c);
    return dev;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.reads++;
    if (this.badByte !== null && offset <= this.badByte && this.badByte < offset + length) {
      throw Object.assign(new Error(`I/O error at ${this.badByte}`), { code: 'EIO' });
    }
    const buf = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.fh.read(buf, 0, length, offset);
    if (bytesRead < length) buf.fill(0, bytesRead);
    return buf;
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    if (this.readOnly) throw Object.assign(new Error('read-only'), { code: 'EROFS' });
    if (this.beforeWrite) await this.beforeWrite(offset, data.length);
    await this.fh.write(data, 0, data.length, offset);
    for (let c = Math.floor(offset / CHUNK); c * CHUNK < offset + data.length; c++) this.allocated.add(c);
    if (opts.fua) {
      this.fuaWrites++;
      await this.fh.datasync();
    }
  }

  async writeZeroes(offset: number, length: number, opts: WriteOptions & { mayTrim?: boolean } = {}): Promise<void> {
    await this.write(offset, Buffer.alloc(length), opts);
    if (opts.mayTrim) {
      for (let c = Math.ceil(offset / CHUNK); (c + 1) * CHUNK <= offset + length; c++) this.allocated.delete(c);
    }
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length, { mayTrim: true });
  }

  async flush(): Promise<void> {
    this.flushes++;
    await this.fh.datasync();
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const c = Math.floor(pos / CHUNK);
      const next = Math.min((c + 1) * CHUNK, end);
      const hole = !this.allocated.has(c);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += next - pos;
      else out.push({ offset: pos, length: next - pos, hole, zero: hole });
      pos = next;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
