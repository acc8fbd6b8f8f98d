/**
 * VhdImage: one open VHD (fixed, dynamic or differencing, with its parent chain) as a
 * BlockDevice. This is the disk data path the NBD server serves to QEMU.
 *
 * Crash safety of writes (a SIGKILL or power cut at any point leaves an image that opens and
 * returns, for every sector, the old or the new data):
 *  - a new block goes where the trailing footer was; we first write a new trailing footer past
 *    the block, so the file ends in a valid footer at every step, then the data, then the
 *    block's sector bitmap, then (after fdatasync) its BAT entry. Until the BAT entry lands,
 *    readers see the old data (parent or zeros); leftover space is reused on the next open.
 *  - a write into an allocated block writes the data first and sets its bitmap bits after.
 *  - flush() is fsync; FUA writes fdatasync before they return.
 * Metadata changes are serialized by a mutex; reads run concurrently and see the in-memory
 * BAT/bitmaps, which change only after the matching bytes are on disk.
 */
import { realpath, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { BlockDevice, Extent, WriteOptions } from '../block-device.js';
import { allSet, bitmapBytes, bitRuns, parseBat, setBits, UNUSED } from './bat.js';
import { isFile, MAX_CHAIN_DEPTH, parentCandidates, readLocators } from './chain.js';
import { HEADER_SIZE, parseDynamicHeader, type DynamicHeader, locatorSpaceBytes } from './dynamic-header.js';
import { vhdError, REPAIR_HINT } from './errors.js';
import {
  FOOTER_SIZE,
  footerChecksumOk,
  formatUuid,
  hasFooterCookie,
  parseFooter,
  serializeFooter,
  type Footer,
} from './footer.js';
import { MAX_VHD_BYTES, virtualSizeOf } from './geometry.js';
import { Mutex, openImageFile, readAt, readInto, roundUp, SECTOR, writeAt } from './io.js';
import { checkRange, checkWritable } from '../io-range.js';

export interface VhdOpenOptions {
  write?: boolean;
  /** More directories to look for parents in (after the child's own directory). */
  parentDirs?: string[];
  /**
   * Skip the fdatasync between a new block's data and its BAT entry. Only for files nobody can
   * see until they are complete and renamed into place (convert, compact).
   */
  unsafeNoSync?: boolean;
  /** Open a differencing disk without its parent (check, info of a broken chain). */
  noParent?: boolean;
  /** Internal: real paths already in this chain, for loop detection. */
  chain?: string[];
}

/** Where the footer we trust came from: the end of the file, or the copy at offset 0 after a crash. */
export type FooterSource = 'tail' | 'head';

const ZERO_CHUNK = 4 * 1024 * 1024;

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
  private footerBytes: Buffer;
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
    this.footerBytes = serializeFooter(footer);
    const bs = header?.blockSize ?? 0;
    this.sectorsPerBlock = bs / SECTOR;
    this.bitmapSize = header ? bitmapBytes(bs) : 0;
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
    this.checkRange(offset, length);
    // Every byte is written below (data, parent data or explicit zeros), so no need to pre-zero.
    const out = Buffer.allocUnsafe(length);
    await this.readInto(out, 0, offset, length);
    return out;
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    await this.mutex.run(async () => {
      await this.writeLocked(offset, data);
      if (opts.fua) await this.fh.datasync();
    });
  }

  async writeZeroes(offset: number, length: number, opts: WriteOptions & { mayTrim?: boolean } = {}): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
    if (length === 0) return;
    await this.mutex.run(async () => {
      const end = offset + length;
      let pos = offset;
      while (pos < end) {
        const step = this.bat
          ? Math.min(this.blockSize - (pos % this.blockSize), end - pos)
          : Math.min(ZERO_CHUNK, end - pos);
        if (this.bat && (await this.readsZeroWithoutWriting(pos, step))) {
          pos += step;
          continue;
        }
        if (opts.mayTrim && this.bat && !this.parent && this.footer.diskType === 'dynamic' && step === this.blockSize) {
          // A whole block of a dynamic disk: unallocating it is one atomic 4-byte BAT write, and it
          // reads as zeros from then on. Its space is reclaimed by compact.
          await this.unallocate(Math.floor(pos / this.blockSize));
          pos += step;
          continue;
        }
        for (let p = pos; p < pos + step; p += ZERO_CHUNK) {
          const n = Math.min(ZERO_CHUNK, pos + step - p);
          await this.writeLocked(p, zeroBuffer(n));
        }
        pos += step;
      }
      if (opts.fua) await this.fh.datasync();
    });
  }

  /** Advisory: we keep the data (a later compact drops all-zero blocks). */
  async trim(offset: number, length: number): Promise<void> {
    this.checkWritable();
    this.checkRange(offset, length);
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.mutex.run(() => this.fh.sync());
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const out: Extent[] = [];
    const push = (e: Extent): void => {
      if (e.length === 0) return;
      const last = out[out.length - 1];
      if (last && last.hole === e.hole && last.zero === e.zero && last.offset + last.length === e.offset) {
        last.length += e.length;
      } else out.push({ ...e });
    };
    if (!this.bat) {
      push({ offset, length, hole: false, zero: false });
      return out;
    }
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const blk = Math.floor(pos / this.blockSize);
      const inBlk = pos - blk * this.blockSize;
      const n = Math.min(this.blockSize - inBlk, end - pos);
      if (this.bat[blk] === UNUSED) {
        for (const e of await this.parentStatus(pos, n)) push(e);
      } else {
        const bm = await this.bitmap(blk);
        for (const [s, cnt, present] of bitRuns(
          bm,
          Math.floor(inBlk / SECTOR),
          Math.ceil((inBlk + n) / SECTOR) - Math.floor(inBlk / SECTOR),
        )) {
          const a = Math.max(pos, blk * this.blockSize + s * SECTOR);
          const b = Math.min(pos + n, blk * this.blockSize + (s + cnt) * SECTOR);
          if (present) push({ offset: a, length: b - a, hole: false, zero: false });
          else for (const e of await this.parentStatus(a, b - a)) push(e);
        }
      }
      pos += n;
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.mutex.run(async () => {
      await this.fh.close();
    });
    await this.parent?.close();
  }

  // ---- engine internals (used by merge, compact, check, convert) ----------------------------

  /** The sector bitmap of an allocated block (cached; callers must not mutate it). */
  async bitmap(blk: number): Promise<Buffer> {
    let bm = this.bitmaps.get(blk);
    if (!bm) {
      const entry = this.bat![blk]!;
      bm = await readAt(this.fh, entry * SECTOR, this.bitmapSize, `the sector bitmap of block ${blk}`);
      this.bitmaps.set(blk, bm);
    }
    return bm;
  }

  /** Reads `length` bytes of this image's own data in block `blk` (no parent), ignoring the bitmap. */
  async readBlockData(blk: number, inBlk: number, length: number, into: Buffer, intoOff = 0): Promise<void> {
    const entry = this.bat![blk]!;
    await readInto(this.fh, into, intoOff, length, entry * SECTOR + this.bitmapSize + inBlk, `block ${blk}`);
  }

  /** Rewrites the footer (and its copy at 0 for dynamic disks): tail first, so one good copy always exists. */
  async rewriteFooter(footer: Footer): Promise<void> {
    await this.mutex.run(async () => {
      const bytes = serializeFooter(footer);
      const tailAt = this.bat ? this.nextFree : this.sizeBytesOnDisk();
      await writeAt(this.fh, tailAt, bytes);
      if (this.fileSize > tailAt + FOOTER_SIZE) await this.fh.truncate(tailAt + FOOTER_SIZE);
      this.fileSize = tailAt + FOOTER_SIZE;
      await this.fh.sync();
      if (this.bat) {
        await writeAt(this.fh, 0, bytes);
        await this.fh.sync();
      }
      this.footer = footer;
      this.footerBytes = bytes;
    });
  }

  /** The file handle, for engine modules that manage their own ordering (resize). */
  get handle(): FileHandle {
    return this.fh;
  }

  get lock(): Mutex {
    return this.mutex;
  }

  private sizeBytesOnDisk(): number {
    return this.fileSize - FOOTER_SIZE;
  }

  // ---- private -------------------------------------------------------------------------------

  private checkRange(offset: number, length: number): void {
    checkRange(this, this.closed, offset, length);
  }

  private checkWritable(): void {
    checkWritable(this);
  }

  private async readInto(out: Buffer, outOff: number, offset: number, length: number): Promise<void> {
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

  private async parentStatus(pos: number, n: number): Promise<Extent[]> {
    if (this.parent && pos < this.parent.sizeBytes) {
      const m = Math.min(n, this.parent.sizeBytes - pos);
      const ext = await this.parent.blockStatus(pos, m);
      if (m < n) ext.push({ offset: pos + m, length: n - m, hole: true, zero: true });
      return ext;
    }
    return [{ offset: pos, length: n, hole: true, zero: true }];
  }

  /** True when [pos, pos+n) inside one block already reads as zeros and needs no write to stay so. */
  private async readsZeroWithoutWriting(pos: number, n: number): Promise<boolean> {
    const blk = Math.floor(pos / this.blockSize);
    if (this.bat![blk] !== UNUSED) return false;
    return (await this.parentStatus(pos, n)).every((e) => e.zero);
  }

  private async writeLocked(offset: number, data: Buffer): Promise<void> {
    if (offset % SECTOR !== 0 || data.length % SECTOR !== 0) {
      // Read-modify-write of the partial sectors at the edges.
      const start = Math.floor(offset / SECTOR) * SECTOR;
      const end = Math.min(roundUp(offset + data.length, SECTOR), this.sizeBytes);
      const buf = Buffer.alloc(end - start);
      await this.readInto(buf, 0, start, end - start);
      data.copy(buf, offset - start);
      offset = start;
      data = buf;
    }
    if (!this.bat) {
      await writeAt(this.fh, offset, data);
      return;
    }
    const end = offset + data.length;
    let pos = offset;
    while (pos < end) {
      const blk = Math.floor(pos / this.blockSize);
      const inBlk = pos - blk * this.blockSize;
      const n = Math.min(this.blockSize - inBlk, end - pos);
      const chunk = data.subarray(pos - offset, pos - offset + n);
      if (this.bat[blk] === UNUSED) {
        await this.allocate(blk, inBlk, chunk);
      } else {
        const base = this.bat[blk]! * SECTOR;
        await writeAt(this.fh, base + this.bitmapSize + inBlk, chunk);
        const bm = await this.bitmap(blk);
        const next = Buffer.from(bm);
        if (setBits(next, inBlk / SECTOR, n / SECTOR)) {
          await writeAt(this.fh, base, next);
          this.bitmaps.set(blk, next);
        }
      }
      pos += n;
    }
  }

  private async unallocate(blk: number): Promise<void> {
    const entry = Buffer.alloc(4, 0xff);
    await writeAt(this.fh, this.header!.tableOffset + blk * 4, entry);
    this.bat![blk] = UNUSED;
    this.bitmaps.delete(blk);
  }

  private async allocate(blk: number, inBlk: number, chunk: Buffer): Promise<void> {
    const at = this.nextFree;
    const blockEnd = at + this.bitmapSize + this.blockSize;
    if (at / SECTOR > 0xfffffffe) {
      throw vhdError('FD_VHD_BAD_SIZE', `${this.path} has grown past what a BAT entry can address`);
    }
    // Anything past the old footer may be leftovers of an interrupted allocation, not zeros.
    const dirty = this.fileSize > at + FOOTER_SIZE;
    const differencing = this.footer.diskType === 'differencing';
    // 1. A valid trailing footer past the new block before anything else changes.
    await writeAt(this.fh, blockEnd, this.footerBytes);
    if (this.fileSize > blockEnd + FOOTER_SIZE) await this.fh.truncate(blockEnd + FOOTER_SIZE);
    this.fileSize = blockEnd + FOOTER_SIZE;
    // 2. Data. A dynamic block is marked fully present, so the rest of it must read as zeros.
    const dataAt = at + this.bitmapSize;
    if (dirty && !differencing) {
      const full = Buffer.alloc(this.blockSize);
      chunk.copy(full, inBlk);
      await writeAt(this.fh, dataAt, full);
    } else {
      await writeAt(this.fh, dataAt + inBlk, chunk);
    }
    // 3. Bitmap.
    const bm = Buffer.alloc(this.bitmapSize);
    if (differencing) setBits(bm, inBlk / SECTOR, chunk.length / SECTOR);
    else setBits(bm, 0, this.sectorsPerBlock);
    await writeAt(this.fh, at, bm);
    if (!this.opts.unsafeNoSync) await this.fh.datasync();
    // 4. BAT entry: from here on readers see the new block.
    const entry = Buffer.alloc(4);
    entry.writeUInt32BE(at / SECTOR);
    await writeAt(this.fh, this.header!.tableOffset + blk * 4, entry);
    this.bitmaps.set(blk, bm);
    this.bat![blk] = at / SECTOR;
    this.nextFree = blockEnd;
  }
}

let zeros = Buffer.alloc(0);
function zeroBuffer(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(Math.max(n, ZERO_CHUNK));
  return zeros.subarray(0, n);
}

/**
 * The footer we trust: the trailing one when it is intact, else (dynamic/differencing only) the
 * copy at offset 0, which survives a crash while the file was growing.
 */
async function readFooter(
  fh: FileHandle,
  fileSize: number,
  path: string,
): Promise<{ footer: Footer; source: FooterSource }> {
  const tail = await readAt(fh, fileSize - FOOTER_SIZE, FOOTER_SIZE, 'the footer');
  let tailError: unknown;
  try {
    return { footer: parseFooter(tail, `trailing footer of ${path}`), source: 'tail' };
  } catch (err) {
    tailError = err;
  }
  if (fileSize >= 2 * FOOTER_SIZE) {
    const head = await readAt(fh, 0, FOOTER_SIZE, 'the footer copy');
    if (hasFooterCookie(head) && footerChecksumOk(head)) {
      const footer = parseFooter(head, `footer copy at offset 0 of ${path}`);
      if (footer.diskType !== 'fixed') return { footer, source: 'head' };
    }
    // A head copy with the right cookie but a bad checksum says more than "not a VHD".
    if (!hasFooterCookie(tail) && hasFooterCookie(head)) parseFooter(head, `footer copy at offset 0 of ${path}`);
  }
  throw tailError;
}

/**
 * Checks that every BAT entry lies inside the file and that no block overlaps another block or
 * the metadata; returns where the next block goes. Refusing such images at open is what keeps
 * a write from landing on top of another block or the BAT.
 */
function validateLayout(
  path: string,
  footer: Footer,
  header: DynamicHeader,
  bat: Uint32Array,
  fileSize: number,
  virtualSize: number,
): { nextFree: number } {
  const bmBytes = bitmapBytes(header.blockSize);
  const blockSpan = bmBytes + header.blockSize;
  const meta: Array<[number, number, string]> = [
    [0, FOOTER_SIZE, 'the footer copy'],
    [footer.dataOffset, footer.dataOffset + HEADER_SIZE, 'the dynamic header'],
    [header.tableOffset, header.tableOffset + roundUp(bat.length * 4, SECTOR), 'the BAT'],
  ];
  let nextFree = 0;
  for (const [, e] of meta) nextFree = Math.max(nextFree, e);
  for (const loc of header.locators) {
    if (loc.dataOffset >= FOOTER_SIZE && loc.dataLength > 0 && loc.dataOffset + loc.dataLength <= fileSize) {
      const e =
        loc.dataOffset +
        Math.max(roundUp(loc.dataLength, SECTOR), Math.min(locatorSpaceBytes(loc), fileSize - loc.dataOffset));
      nextFree = Math.max(nextFree, roundUp(e, SECTOR));
    }
  }
  const blocks: Array<[number, number]> = [];
  for (let i = 0; i < bat.length; i++) {
    const entry = bat[i]!;
    if (entry === UNUSED) continue;
    const start = entry * SECTOR;
    // The last block of a disk whose size is not block-aligned need only hold the used part.
    const used = Math.min(header.blockSize, Math.max(0, virtualSize - i * header.blockSize));
    if (start + bmBytes + used > fileSize) {
      throw vhdError(
        'FD_VHD_BAT_PAST_EOF',
        `${path}: BAT entry ${i} points at byte ${start}, past the end of the file (${fileSize} bytes)`,
        REPAIR_HINT,
      );
    }
    for (const [ms, me, what] of meta) {
      if (start < me && start + blockSpan > ms) {
        throw vhdError('FD_VHD_BAT_OVERLAP', `${path}: block ${i} at byte ${start} overlaps ${what}`, REPAIR_HINT);
      }
    }
    blocks.push([start, i]);
    nextFree = Math.max(nextFree, start + blockSpan);
  }
  blocks.sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < blocks.length; k++) {
    if (blocks[k]![0] < blocks[k - 1]![0] + blockSpan) {
      throw vhdError(
        'FD_VHD_BAT_OVERLAP',
        `${path}: blocks ${blocks[k - 1]![1]} and ${blocks[k]![1]} overlap (at bytes ${blocks[k - 1]![0]} and ${blocks[k]![0]})`,
        REPAIR_HINT,
      );
    }
  }
  return { nextFree: roundUp(nextFree, SECTOR) };
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
