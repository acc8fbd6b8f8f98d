/**
 * The write path of a VhdImage, with group commit: a write that arrives while a batch runs
 * joins the next batch, and a batch costs a few file calls however many writes it holds
 * (contiguous data goes out as one pwritev, each newly allocated run of blocks gets one
 * footer move, one fdatasync and one BAT write). A lone write still starts at once. QEMU keeps
 * up to 16 writes in flight, so a sequential writer's 4 KiB writes go to the file 16 at a time.
 *
 * Crash safety (a SIGKILL or power cut at any point leaves an image that opens and returns,
 * for every sector, the old or the new data):
 *  - new blocks go where the trailing footer was; we first write a new trailing footer past
 *    them, so the file ends in a valid footer at every step, then their data and sector
 *    bitmaps, then (after fdatasync) their BAT entries. Until a BAT entry lands, readers see
 *    the old data (parent or zeros); leftover space is reused on the next open.
 *  - a write into an allocated block writes the data first and sets its bitmap bits after.
 *  - flush() is fsync; FUA writes fdatasync before they return.
 * In-memory BAT and bitmaps change only after the bytes they describe are in the file.
 *
 * Order: writes that overlap (to the sector) never share a batch, and an exclusive operation
 * (flush, zeroes, footer rewrite, close) closes the open batch, so everything runs in the
 * order it was called.
 */
import { setBits, UNUSED } from './bat.js';
import { vhdError } from './errors.js';
import { FOOTER_SIZE } from './footer.js';
import type { VhdImage } from './image.js';
import { type Mutex, roundUp, SECTOR, settleAll, writeAt, writeRuns, type Piece } from './io.js';

interface Pending {
  offset: number;
  data: Buffer;
  fua: boolean;
  /** Sector-rounded range, for the overlap check. */
  start: number;
  end: number;
  resolve: () => void;
  reject: (err: unknown) => void;
}

interface Allocation {
  blocks: number[];
  /** File offset of the first new block; the others follow in order. */
  at: number;
  bitmaps: Buffer[];
  /** fdatasync before the BAT entries (not needed inside a reserve). */
  sync: boolean;
}

interface Batch {
  items: Pending[];
  bytes: number;
}

/** A batch stops taking writes past this many bytes (the next one opens behind it). */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;
/** ... or past this many writes (the overlap check is linear in it). */
const MAX_BATCH_WRITES = 256;
const ZERO_CHUNK = 4 * 1024 * 1024;

export class VhdWriter {
  private open: Batch | null = null;
  /** Set when a BAT write failed: the file and our view of it may disagree, so we stop writing. */
  private broken: Error | null = null;
  /**
   * Every byte from here to the trailing footer reads as zeros, durably: space reserved by a
   * growth of the file. Unknown (Infinity) until we grow it ourselves.
   */
  private freshFrom = Infinity;
  /** We grew the file past its data in this session (given back at close). */
  private reserved = false;
  /** Unallocated BAT entries (counted at the first allocation), the cap of a reserve. */
  private unallocated = -1;

  constructor(
    private readonly img: VhdImage,
    private readonly mutex: Mutex,
  ) {}

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    if (this.broken) return Promise.reject(this.broken);
    const start = Math.floor(offset / SECTOR) * SECTOR;
    const end = roundUp(offset + data.length, SECTOR);
    let b = this.open;
    if (
      !b ||
      b.bytes + data.length > MAX_BATCH_BYTES ||
      b.items.length >= MAX_BATCH_WRITES ||
      b.items.some((i) => i.start < end && start < i.end)
    ) {
      b = this.openBatch();
    }
    const batch = b;
    batch.bytes += data.length;
    return new Promise((resolve, reject) => batch.items.push({ offset, data, fua, start, end, resolve, reject }));
  }

  /** Runs `fn` alone, after every write called before it and before any called after. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.open = null;
    return this.mutex.run(fn);
  }

  /** Makes [offset, offset+length) read as zeros, writing only what does not already. */
  writeZeroes(offset: number, length: number, fua: boolean, mayTrim: boolean): Promise<void> {
    return this.exclusive(async () => {
      if (this.broken) throw this.broken;
      const img = this.img;
      const bs = img.blockSize;
      const end = offset + length;
      let pos = offset;
      while (pos < end) {
        const step = img.bat ? Math.min(bs - (pos % bs), end - pos) : Math.min(ZERO_CHUNK, end - pos);
        const blk = Math.floor(pos / bs);
        if (img.bat && img.bat[blk] === UNUSED && (await img.parentReadsZero(pos, step))) {
          pos += step;
          continue;
        }
        if (mayTrim && img.bat && !img.parent && img.diskType === 'dynamic' && step === bs) {
          // A whole block of a dynamic disk: unallocating it is one atomic 4-byte BAT write, and it
          // reads as zeros from then on. Its space is reclaimed by compact.
          await this.unallocate(blk);
          pos += step;
          continue;
        }
        for (let p = pos; p < pos + step; p += ZERO_CHUNK) {
          await this.apply([{ offset: p, data: zeroBuffer(Math.min(ZERO_CHUNK, pos + step - p)) }]);
        }
        pos += step;
      }
      if (fua) await img.handle.datasync();
    });
  }

  private openBatch(): Batch {
    const b: Batch = { items: [], bytes: 0 };
    this.open = b;
    void this.mutex.run(async () => {
      if (this.open === b) this.open = null;
      await this.run(b.items);
    });
    return b;
  }

  private async run(items: Pending[]): Promise<void> {
    try {
      if (this.broken) throw this.broken;
      await this.apply(items);
    } catch (err) {
      for (const i of items) i.reject(err);
      return;
    }
    const fua: Pending[] = [];
    for (const i of items) {
      if (i.fua) fua.push(i);
      else i.resolve();
    }
    if (fua.length === 0) return;
    try {
      await this.img.handle.datasync();
      for (const i of fua) i.resolve();
    } catch (err) {
      for (const i of fua) i.reject(err);
    }
  }

  /** Writes a set of non-overlapping writes; the caller holds the mutex. */
  private async apply(writes: Array<{ offset: number; data: Buffer }>): Promise<void> {
    const img = this.img;
    const fh = img.handle;
    const chunks = await settleAll(writes.map((w) => this.wholeSectors(w.offset, w.data)));
    if (!img.bat) {
      await writeRuns(
        fh,
        chunks.map((c) => ({ pos: c.offset, buf: c.data })),
      );
      return;
    }
    const bs = img.blockSize;
    const data: Piece[] = [];
    /** Allocated blocks written into: the sector runs whose bitmap bits must be set after. */
    const touched = new Map<number, Array<[number, number]>>();
    /** Blocks to allocate, with the pieces that go into each. */
    const fresh = new Map<number, Array<{ inBlk: number; buf: Buffer }>>();
    for (const c of chunks) {
      const end = c.offset + c.data.length;
      for (let pos = c.offset; pos < end;) {
        const blk = Math.floor(pos / bs);
        const inBlk = pos - blk * bs;
        const n = Math.min(bs - inBlk, end - pos);
        const buf = c.data.subarray(pos - c.offset, pos - c.offset + n);
        const entry = img.bat[blk]!;
        if (entry === UNUSED) {
          let list = fresh.get(blk);
          if (!list) fresh.set(blk, (list = []));
          list.push({ inBlk, buf });
        } else {
          data.push({ pos: entry * SECTOR + img.bitmapSize + inBlk, buf });
          let runs = touched.get(blk);
          if (!runs) touched.set(blk, (runs = []));
          runs.push([inBlk / SECTOR, n / SECTOR]);
        }
        pos += n;
      }
    }
    const allocation = fresh.size ? await this.prepareBlocks(fresh, data) : null;
    try {
      await writeRuns(fh, data);
      if (allocation) await this.commitBlocks(allocation);
    } catch (err) {
      // Part of the new blocks' space may hold data now: it is no longer known to be zeros.
      if (allocation) this.freshFrom = Infinity;
      throw err;
    }
    await settleAll([...touched].map(([blk, runs]) => this.setBitmapBits(blk, runs)));
  }

  /** A write widened to whole sectors, the edges read from the image (read-modify-write). */
  private async wholeSectors(offset: number, data: Buffer): Promise<{ offset: number; data: Buffer }> {
    if (offset % SECTOR === 0 && data.length % SECTOR === 0) return { offset, data };
    const start = Math.floor(offset / SECTOR) * SECTOR;
    const end = Math.min(roundUp(offset + data.length, SECTOR), this.img.sizeBytes);
    const buf = Buffer.alloc(end - start);
    await this.img.readInto(buf, 0, start, end - start);
    data.copy(buf, offset - start);
    return { offset: start, data: buf };
  }

  /**
   * Places new blocks (in block order) at the end of the image's data and queues their data
   * and bitmaps into `data`. Nothing refers to them yet: commitBlocks writes their BAT entries.
   */
  private async prepareBlocks(
    fresh: Map<number, Array<{ inBlk: number; buf: Buffer }>>,
    data: Piece[],
  ): Promise<Allocation> {
    const img = this.img;
    const fh = img.handle;
    const span = img.bitmapSize + img.blockSize;
    const blocks = [...fresh.keys()].sort((a, b) => a - b);
    const at = img.nextFree;
    const need = blocks.length * span;
    if ((at + need - span) / SECTOR > 0xfffffffe) {
      throw vhdError('FD_VHD_BAD_SIZE', `${img.path} has grown past what a BAT entry can address`);
    }
    if (this.unallocated < 0) this.unallocated = img.bat!.reduce((n, e) => (e === UNUSED ? n + 1 : n), 0);
    const tail = img.fileSize - FOOTER_SIZE;
    const differencing = img.diskType === 'differencing';
    let sync = img.syncsAllocations;
    // Anything between the blocks and the footer may be leftovers of an interrupted allocation.
    let leftovers = false;
    if (!differencing && at >= this.freshFrom && at + need <= tail) {
      // Inside space reserved by an earlier growth, which reads as zeros and is durable: a lost
      // data or bitmap write there reads as zeros, what an unwritten block of a dynamic disk
      // holds, in whatever order the writes land. So no footer move and no sync.
      sync = false;
    } else if (at < tail && at < this.freshFrom) {
      leftovers = true;
      // A valid trailing footer past the new blocks before anything else changes.
      await writeAt(fh, at + need, img.footerBytes);
      if (img.fileSize > at + need + FOOTER_SIZE) await fh.truncate(at + need + FOOTER_SIZE);
      img.fileSize = at + need + FOOTER_SIZE;
    } else {
      // Grow: the new trailing footer past the new blocks and a reserve for the next ones (a
      // sparse hole: it costs no disk space), so the next allocations need no sync.
      const reserve = differencing
        ? 0
        : Math.max(0, Math.min(Math.floor(img.reserveBytes / span), this.unallocated - blocks.length));
      const endAt = at + need + reserve * span;
      await writeAt(fh, endAt, img.footerBytes);
      img.fileSize = endAt + FOOTER_SIZE;
      this.reserved ||= reserve > 0;
      // The old footer, if it lay past `at`, ends a reserve of whole blocks: it sits where one of
      // the new blocks' bitmaps goes, and that bitmap is written before the sync.
    }
    // Data and bitmaps. A dynamic block is marked fully present, so the rest of it must read as
    // zeros: fresh file space does; leftovers are overwritten with a whole block.
    const bitmaps: Buffer[] = [];
    blocks.forEach((blk, k) => {
      const base = at + k * span;
      const pieces = fresh.get(blk)!;
      const bm = Buffer.alloc(img.bitmapSize);
      if (differencing) for (const p of pieces) setBits(bm, p.inBlk / SECTOR, p.buf.length / SECTOR);
      else setBits(bm, 0, img.sectorsPerBlock);
      bitmaps.push(bm);
      data.push({ pos: base, buf: bm });
      if (leftovers && !differencing) {
        const full = Buffer.alloc(img.blockSize);
        for (const p of pieces) p.buf.copy(full, p.inBlk);
        data.push({ pos: base + img.bitmapSize, buf: full });
      } else {
        for (const p of pieces) data.push({ pos: base + img.bitmapSize + p.inBlk, buf: p.buf });
      }
    });
    return { blocks, at, bitmaps, sync };
  }

  /** Once data and bitmaps are durable (where that matters), the BAT entries: from then on readers see the blocks. */
  private async commitBlocks(a: Allocation): Promise<void> {
    const img = this.img;
    const span = img.bitmapSize + img.blockSize;
    if (a.sync) await img.handle.datasync();
    const entries: Piece[] = [];
    for (let k = 0; k < a.blocks.length;) {
      // Consecutive block numbers have consecutive BAT entries: one write for the run.
      let n = 1;
      while (k + n < a.blocks.length && a.blocks[k + n] === a.blocks[k]! + n) n++;
      const buf = Buffer.allocUnsafe(4 * n);
      for (let i = 0; i < n; i++) buf.writeUInt32BE((a.at + (k + i) * span) / SECTOR, 4 * i);
      entries.push({ pos: img.header!.tableOffset + a.blocks[k]! * 4, buf });
      k += n;
    }
    try {
      await writeRuns(img.handle, entries);
    } catch (err) {
      this.broken = vhdError('FD_VHD_TRUNCATED', `${img.path}: a BAT update failed; reopen the image`, undefined, err);
      throw err;
    }
    a.blocks.forEach((blk, k) => {
      img.bat![blk] = (a.at + k * span) / SECTOR;
      img.cacheBitmap(blk, a.bitmaps[k]!);
    });
    img.nextFree = a.at + a.blocks.length * span;
    this.unallocated -= a.blocks.length;
    // What lies past the new blocks up to the footer is the reserve (zeros), or nothing.
    this.freshFrom = img.nextFree;
  }

  /** At a clean close: the file ends right after its last block again (the reserve is given back). */
  async dropReserve(): Promise<void> {
    const img = this.img;
    if (!this.reserved || this.broken || img.fileSize - FOOTER_SIZE <= img.nextFree) return;
    await writeAt(img.handle, img.nextFree, img.footerBytes);
    await img.handle.truncate(img.nextFree + FOOTER_SIZE);
    img.fileSize = img.nextFree + FOOTER_SIZE;
    await img.handle.datasync();
    this.reserved = false;
  }

  /** Sets the bits of sectors just written into an allocated block, once their data is in the file. */
  private async setBitmapBits(blk: number, runs: Array<[number, number]>): Promise<void> {
    const img = this.img;
    const bm = await img.bitmap(blk);
    let next: Buffer | null = null;
    for (const [first, count] of runs) {
      if (allBitsSet(bm, first, count)) continue;
      next ??= Buffer.from(bm);
      setBits(next, first, count);
    }
    if (!next) return;
    await writeAt(img.handle, img.bat![blk]! * SECTOR, next);
    img.cacheBitmap(blk, next);
  }

  private async unallocate(blk: number): Promise<void> {
    const img = this.img;
    await writeAt(img.handle, img.header!.tableOffset + blk * 4, Buffer.alloc(4, 0xff));
    img.bat![blk] = UNUSED;
    img.cacheBitmap(blk, null);
  }
}

function allBitsSet(bm: Buffer, first: number, count: number): boolean {
  let s = first;
  const end = first + count;
  for (; s < end && s & 7; s++) if ((bm[s >> 3]! & (0x80 >> (s & 7))) === 0) return false;
  for (; s + 8 <= end; s += 8) if (bm[s >> 3] !== 0xff) return false;
  for (; s < end; s++) if ((bm[s >> 3]! & (0x80 >> (s & 7))) === 0) return false;
  return true;
}

let zeros = Buffer.alloc(0);
function zeroBuffer(n: number): Buffer {
  if (zeros.length < n) zeros = Buffer.alloc(Math.max(n, ZERO_CHUNK));
  return zeros.subarray(0, n);
}
