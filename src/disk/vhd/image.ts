/**
 * VhdImage: one open VHD (fixed, dynamic or differencing, with its parent chain) as a
 * BlockDevice. This is the disk data path the NBD server serves to QEMU. This file holds
 * opening and the read side; writes go through the VhdWriter (writer.ts), which batches them
 * and holds the crash-safety rules.
 *
 * Metadata changes are serialized by one mutex (the writer's batches and every exclusive
 * operation take it); reads run concurrently and see the in-memory BAT/bitmaps, which change
 * only after the matching bytes are in the file.
 */
import { realpath, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockDevice, Extent, WriteOptions } from '../block-device.js';
import { allSet, bitmapBytes, bitRuns, parseBat, UNUSED } from './bat.js';
import { isFile, MAX_CHAIN_DEPTH, parentCandidates, readLocators } from './chain.js';
import { HEADER_SIZE, parseDynamicHeader, type DynamicHeader } from './dynamic-header.js';
import { vhdError, REPAIR_HINT } from './errors.js';
import { FOOTER_SIZE, formatUuid, serializeFooter, type Footer } from './footer.js';
import { MAX_VHD_BYTES, virtualSizeOf } from './geometry.js';
import { Mutex, openImageFile, readAt, readInto, SECTOR, writeAt } from './io.js';
import { readFooter, validateLayout, type FooterSource } from './layout.js';
import { VhdWriter } from './writer.js';
import { checkRange, checkWritable } from '../io-range.js';

export type { FooterSource } from './layout.js';

export interface VhdOpenOptions {
  write?: boolean;
  /** More directories to look for parents in (after the child's own directory). */
  parentDirs?: string[];
  /**
   * Skip the fdatasync between a new block's data and its BAT entry. Only for files nobody can
   * see until they are complete and renamed into place (convert, compact).
   */
  unsafeNoSync?: boolean;
  /**
   * How far past its data a growing dynamic image reserves space (a sparse hole, given back at
   * close), so most allocations need no sync. Default 32 MiB; tests make it small.
   */
  reserveBytes?: number;
  /** Open a differencing disk without its parent (check, info of a broken chain). */
  noParent?: boolean;
  /** Internal: real paths already in this chain, for loop detection. */
  chain?: string[];
}

type Missing = Array<[VhdImage, number]>;

const DEFAULT_RESERVE_BYTES = 32 * 1024 * 1024;

export class VhdImage implements BlockDevice {
  readonly readOnly: boolean;
  readonly sizeBytes: number;
  readonly sectorsPerBlock: number;
  readonly bitmapSize: number;
  /** Tracks the file's length as we grow it. */
  fileSize: number;
  /** Byte offset where the next block goes: just past everything the image references. */
  nextFree: number;
  parentTimestampMismatch = false;
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly mutex = new Mutex();
  private readonly writer: VhdWriter;
  private footerBytesNow: Buffer;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    public footer: Footer,
    readonly footerSource: FooterSource,
    readonly header: DynamicHeader | null,
    readonly bat: Uint32Array | null,
    readonly parent: VhdImage | null,
    fileSize: number,
    nextFree: number,
    private readonly opts: VhdOpenOptions,
  ) {
    this.readOnly = !opts.write;
    this.sizeBytes = Math.floor(virtualSizeOf(footer) / SECTOR) * SECTOR;
    this.fileSize = fileSize;
    this.nextFree = nextFree;
    this.footerBytesNow = serializeFooter(footer);
    const bs = header?.blockSize ?? 0;
    this.sectorsPerBlock = bs / SECTOR;
    this.bitmapSize = header ? bitmapBytes(bs) : 0;
    this.writer = new VhdWriter(this, this.mutex);
  }

  get blockSize(): number {
    return this.header?.blockSize ?? 0;
  }

  get diskType(): Footer['diskType'] {
    return this.footer.diskType;
  }

  get uuid(): string {
    return formatUuid(this.footer.uniqueId);
  }

  /** Paths of the chain, this image first. */
  get chainPaths(): string[] {
    return [this.path, ...(this.parent?.chainPaths ?? [])];
  }

  static async open(path: string, opts: VhdOpenOptions = {}): Promise<VhdImage> {
    const abs = resolve(path);
    const fh = await openImageFile(abs, opts.write ? 'r+' : 'r');
    try {
      return await VhdImage.openHandle(abs, fh, opts);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private static async openHandle(path: string, fh: FileHandle, opts: VhdOpenOptions): Promise<VhdImage> {
    const fileSize = (await fh.stat()).size;
    if (fileSize < FOOTER_SIZE) {
      throw vhdError('FD_VHD_TRUNCATED', `${path} is ${fileSize} bytes, too short to hold a VHD footer`);
    }
    const { footer, source } = await readFooter(fh, fileSize, path);
    const virtualSize = virtualSizeOf(footer);
    if (virtualSize > MAX_VHD_BYTES) {
      throw vhdError(
        'FD_VHD_BAD_SIZE',
        `${path} claims a virtual size of ${virtualSize} bytes, beyond the VHD limit of 2040 GiB`,
        REPAIR_HINT,
      );
    }
    if (footer.diskType === 'fixed') {
      if (fileSize - FOOTER_SIZE < virtualSize) {
        throw vhdError(
          'FD_VHD_TRUNCATED',
          `${path} is a fixed VHD of ${virtualSize} bytes but holds only ${fileSize - FOOTER_SIZE} bytes of data`,
        );
      }
      return new VhdImage(path, fh, footer, source, null, null, null, fileSize, fileSize - FOOTER_SIZE, opts);
    }

    if (footer.dataOffset < FOOTER_SIZE || footer.dataOffset % SECTOR !== 0) {
      throw vhdError('FD_VHD_BAD_HEADER', `${path}: dynamic header offset ${footer.dataOffset} is invalid`);
    }
    const headerBuf = await readAt(fh, footer.dataOffset, HEADER_SIZE, 'the dynamic disk header');
    const header = parseDynamicHeader(headerBuf);
    const entries = header.maxTableEntries;
    if (entries * header.blockSize < virtualSize) {
      throw vhdError(
        'FD_VHD_BAD_HEADER',
        `${path}: BAT covers ${entries} blocks of ${header.blockSize} bytes, less than the virtual size ${virtualSize}`,
      );
    }
    if (header.tableOffset < FOOTER_SIZE || header.tableOffset % SECTOR !== 0) {
      throw vhdError('FD_VHD_BAD_HEADER', `${path}: BAT offset ${header.tableOffset} is invalid`);
    }
    if (header.tableOffset + entries * 4 > fileSize) {
      throw vhdError(
        'FD_VHD_TRUNCATED',
        `${path}: BAT of ${entries} entries at ${header.tableOffset} runs past the end of the file (${fileSize} bytes)`,
      );
    }
    const bat = parseBat(await readAt(fh, header.tableOffset, entries * 4, 'the BAT'), entries);
    const layout = validateLayout(path, footer, header, bat, fileSize, virtualSize);

    let parent: VhdImage | null = null;
    let tsMismatch = false;
    if (footer.diskType === 'differencing' && !opts.noParent) {
      const chain = [...(opts.chain ?? []), await realpath(path)];
      if (chain.length > MAX_CHAIN_DEPTH) {
        throw vhdError('FD_VHD_CHAIN_TOO_DEEP', `${path}: chain is deeper than ${MAX_CHAIN_DEPTH} images`);
      }
      ({ parent, tsMismatch } = await openParent(path, fh, header, fileSize, { ...opts, chain }));
    }
    const img = new VhdImage(path, fh, footer, source, header, bat, parent, fileSize, layout.nextFree, opts);
    img.parentTimestampMismatch = tsMismatch;
    return img;
  }

  // ---- BlockDevice -------------------------------------------------------------------------

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this, this.closed, offset, length);
    // Every byte is written below (data, parent data or explicit zeros), so no need to pre-zero.
    const out = Buffer.allocUnsafe(length);
    await this.readInto(out, 0, offset, length);
    return out;
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    checkWritable(this);
    checkRange(this, this.closed, offset, data.length);
    if (data.length === 0) return;
    return this.writer.write(offset, data, opts.fua === true);
  }

  async writeZeroes(offset: number, length: number, opts: WriteOptions & { mayTrim?: boolean } = {}): Promise<void> {
    checkWritable(this);
    checkRange(this, this.closed, offset, length);
    if (length === 0) return;
    await this.writer.writeZeroes(offset, length, opts.fua === true, opts.mayTrim === true);
  }

  /** Advisory: we keep the data (a later compact drops all-zero blocks). */
  async trim(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRange(this, this.closed, offset, length);
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.writer.exclusive(() => this.fh.sync());
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, this.closed, offset, length);
    for (;;) {
      const missing: Missing = [];
      const out = this.statusWalk(offset, length, missing);
      if (missing.length === 0) return out;
      // Load every bitmap the walk lacked, then walk again (a child's partial block may need
      // its parent's bitmaps next).
      await Promise.all(missing.map(([img, blk]) => img.bitmap(blk)));
    }
  }

  /**
   * The allocation map of a range when it can be answered from memory (the BAT and the
   * bitmaps read so far), else null. Lets the NBD server answer a read of a hole at once.
   */
  cachedStatus(offset: number, length: number): Extent[] | null {
    const missing: Missing = [];
    const out = this.statusWalk(offset, length, missing);
    return missing.length ? null : out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writer.exclusive(async () => {
      if (!this.readOnly) await this.writer.dropReserve();
      await this.fh.close();
    });
    await this.parent?.close();
  }

  // ---- engine internals (used by the writer, merge, compact, check, convert) ----------------

  /** The sector bitmap of an allocated block (cached; callers must not mutate it). */
  async bitmap(blk: number): Promise<Buffer> {
    let bm = this.bitmaps.get(blk);
    if (!bm) {
      const entry = this.bat![blk]!;
      bm = await readAt(this.fh, entry * SECTOR, this.bitmapSize, `the sector bitmap of block ${blk}`);
      // A write may have cached a newer bitmap while we read this one.
      bm = this.bitmaps.get(blk) ?? bm;
      this.bitmaps.set(blk, bm);
    }
    return bm;
  }

  /** The writer's view of the bitmap cache: set once the bitmap is in the file, dropped with its block. */
  cacheBitmap(blk: number, bm: Buffer | null): void {
    if (bm) this.bitmaps.set(blk, bm);
    else this.bitmaps.delete(blk);
  }

  /** Reads `length` bytes of this image's own data in block `blk` (no parent), ignoring the bitmap. */
  async readBlockData(blk: number, inBlk: number, length: number, into: Buffer, intoOff = 0): Promise<void> {
    const entry = this.bat![blk]!;
    await readInto(this.fh, into, intoOff, length, entry * SECTOR + this.bitmapSize + inBlk, `block ${blk}`);
  }

  /** Rewrites the footer (and its copy at 0 for dynamic disks): tail first, so one good copy always exists. */
  async rewriteFooter(footer: Footer): Promise<void> {
    await this.writer.exclusive(async () => {
      const bytes = serializeFooter(footer);
      const tailAt = this.bat ? this.nextFree : this.fileSize - FOOTER_SIZE;
      await writeAt(this.fh, tailAt, bytes);
      if (this.fileSize > tailAt + FOOTER_SIZE) await this.fh.truncate(tailAt + FOOTER_SIZE);
      this.fileSize = tailAt + FOOTER_SIZE;
      await this.fh.sync();
      if (this.bat) {
        await writeAt(this.fh, 0, bytes);
        await this.fh.sync();
      }
      this.footer = footer;
      this.footerBytesNow = bytes;
    });
  }

  /** The file handle, for engine modules that manage their own ordering (resize, the writer). */
  get handle(): FileHandle {
    return this.fh;
  }

  /** The serialized footer, what goes at the end of the file whenever it grows. */
  get footerBytes(): Buffer {
    return this.footerBytesNow;
  }

  get reserveBytes(): number {
    return this.opts.reserveBytes ?? DEFAULT_RESERVE_BYTES;
  }

  /** False for files nobody sees before they are complete (unsafeNoSync): no sync per allocation. */
  get syncsAllocations(): boolean {
    return !this.opts.unsafeNoSync;
  }

  /** Reads [offset, offset+length) of the chain into out[outOff..]. */
  async readInto(out: Buffer, outOff: number, offset: number, length: number): Promise<void> {
    if (!this.bat) {
      await readInto(this.fh, out, outOff, length, offset, 'the data of a fixed disk');
      return;
    }
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const blk = Math.floor(pos / this.blockSize);
      const inBlk = pos - blk * this.blockSize;
      const n = Math.min(this.blockSize - inBlk, end - pos);
      const o = outOff + (pos - offset);
      if (this.bat[blk] === UNUSED) {
        await this.readParent(out, o, pos, n);
      } else {
        const bm = await this.bitmap(blk);
        if (allSet(bm, this.sectorsPerBlock)) {
          await this.readBlockData(blk, inBlk, n, out, o);
        } else {
          const first = Math.floor(inBlk / SECTOR);
          const last = Math.ceil((inBlk + n) / SECTOR);
          for (const [s, cnt, present] of bitRuns(bm, first, last - first)) {
            const a = Math.max(inBlk, s * SECTOR);
            const b = Math.min(inBlk + n, (s + cnt) * SECTOR);
            const ro = o + (a - inBlk);
            if (present) await this.readBlockData(blk, a, b - a, out, ro);
            else await this.readParent(out, ro, blk * this.blockSize + a, b - a);
          }
        }
      }
      pos += n;
    }
  }

  /** True when [pos, pos+n), which this image does not hold, reads as zeros from the parent too. */
  async parentReadsZero(pos: number, n: number): Promise<boolean> {
    if (!this.parent || pos >= this.parent.sizeBytes) return true;
    const m = Math.min(n, this.parent.sizeBytes - pos);
    return (await this.parent.blockStatus(pos, m)).every((e) => e.zero);
  }

  // ---- private -------------------------------------------------------------------------------

  /** Unallocated range: the parent's data where the parent reaches, zeros elsewhere. */
  private async readParent(out: Buffer, outOff: number, pos: number, n: number): Promise<void> {
    if (this.parent && pos < this.parent.sizeBytes) {
      const m = Math.min(n, this.parent.sizeBytes - pos);
      await this.parent.readInto(out, outOff, pos, m);
      out.fill(0, outOff + m, outOff + n);
    } else {
      out.fill(0, outOff, outOff + n);
    }
  }

  /**
   * The allocation map of a range from what is in memory; every block whose bitmap is not
   * cached yet goes to `missing` (its range is left out of the result, which is then partial).
   */
  private statusWalk(offset: number, length: number, missing: Missing): Extent[] {
    const out: Extent[] = [];
    const push = (o: number, len: number, hole: boolean): void => {
      if (len === 0) return;
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.offset + last.length === o) last.length += len;
      else out.push({ offset: o, length: len, hole, zero: hole });
    };
    this.walkInto(offset, length, push, missing);
    return out;
  }

  private walkInto(
    offset: number,
    length: number,
    push: (o: number, len: number, hole: boolean) => void,
    missing: Missing,
  ): void {
    if (!this.bat) return push(offset, length, false);
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const blk = Math.floor(pos / this.blockSize);
      const inBlk = pos - blk * this.blockSize;
      const n = Math.min(this.blockSize - inBlk, end - pos);
      if (this.bat[blk] === UNUSED) {
        this.walkParent(pos, n, push, missing);
      } else {
        const bm = this.bitmaps.get(blk);
        if (!bm) {
          missing.push([this, blk]);
        } else if (allSet(bm, this.sectorsPerBlock)) {
          push(pos, n, false);
        } else {
          const first = Math.floor(inBlk / SECTOR);
          for (const [s, cnt, present] of bitRuns(bm, first, Math.ceil((inBlk + n) / SECTOR) - first)) {
            const a = Math.max(pos, blk * this.blockSize + s * SECTOR);
            const b = Math.min(pos + n, blk * this.blockSize + (s + cnt) * SECTOR);
            if (present) push(a, b - a, false);
            else this.walkParent(a, b - a, push, missing);
          }
        }
      }
      pos += n;
    }
  }

  private walkParent(
    pos: number,
    n: number,
    push: (o: number, len: number, hole: boolean) => void,
    missing: Missing,
  ): void {
    if (this.parent && pos < this.parent.sizeBytes) {
      const m = Math.min(n, this.parent.sizeBytes - pos);
      this.parent.walkInto(pos, m, push, missing);
      push(pos + m, n - m, true);
    } else {
      push(pos, n, true);
    }
  }
}

async function openParent(
  childPath: string,
  fh: FileHandle,
  header: DynamicHeader,
  fileSize: number,
  opts: VhdOpenOptions,
): Promise<{ parent: VhdImage; tsMismatch: boolean }> {
  const locators = await readLocators(fh, header, fileSize);
  const candidates = parentCandidates(childPath, header, locators, opts.parentDirs);
  const mismatched: string[] = [];
  const wantUuid = header.parentUuid;
  const checkUuid = !wantUuid.equals(Buffer.alloc(16));
  for (const cand of candidates) {
    if (!(await isFile(cand))) continue;
    const real = await realpath(cand);
    if (opts.chain?.includes(real)) {
      throw vhdError(
        'FD_VHD_CHAIN_LOOP',
        `${childPath}: parent ${cand} is already in the chain (${opts.chain.join(' -> ')})`,
        'the chain refers back to itself; point the child at the right parent',
      );
    }
    const parent = await VhdImage.open(cand, { parentDirs: opts.parentDirs, chain: opts.chain });
    if (checkUuid && !parent.footer.uniqueId.equals(wantUuid)) {
      mismatched.push(`${cand} (uuid ${parent.uuid})`);
      await parent.close();
      continue;
    }
    return { parent, tsMismatch: parent.footer.timestamp !== header.parentTimestamp };
  }
  if (mismatched.length) {
    throw vhdError(
      'FD_VHD_PARENT_MISMATCH',
      `${childPath}: the parent must have uuid ${formatUuid(wantUuid)}, but ${mismatched.join(', ')} differ`,
      'the parent was replaced or modified; restore the original parent',
    );
  }
  throw vhdError(
    'FD_VHD_PARENT_NOT_FOUND',
    `parent of ${childPath} not found (tried ${candidates.length ? candidates.join(', ') : 'no path: the child names none'})`,
    'move the parent back beside the child, or recreate the child',
  );
}
