/**
 * `disk convert`: any disk we can read (VHD chain, raw; qcow2/VMDK through qemu-img) into raw,
 * dynamic VHD, fixed VHD or qcow2. Streaming and sparse-aware: holes (from blockStatus) are
 * never read and all-zero chunks are never written, so a half-empty 1 GiB disk costs half the
 * I/O. The target is built under a temp name and renamed into place only when complete.
 */
import { open, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { produceFileAtomic, tempPathFor } from '../core/atomic-file.js';
import { FdError } from '../core/errors.js';
import { run } from '../core/process.js';
import { Progress, type ProgressListener } from '../core/progress.js';
import type { BlockDevice } from './block-device.js';
import { openDisk, probeFormat } from './open.js';
import { RawImage } from './raw.js';
import { assertAbsent, checkNewSize, DynamicVhdWriter, newFooter, planDynamic } from './vhd/create.js';
import { DEFAULT_BLOCK_SIZE } from './vhd/dynamic-header.js';
import { vhdError } from './vhd/errors.js';
import { serializeFooter } from './vhd/footer.js';
import { roundUp, SECTOR, writeAt } from './vhd/io.js';

export type ConvertTarget = 'raw' | 'vhd' | 'vhd-fixed' | 'qcow2';
export const CONVERT_TARGETS: readonly ConvertTarget[] = ['raw', 'vhd', 'vhd-fixed', 'qcow2'];

export interface ConvertOptions {
  to: ConvertTarget;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
  /** Dynamic VHD block size (default 2 MiB). */
  blockSizeBytes?: number;
}

export interface ConvertResult {
  source: string;
  target: string;
  to: ConvertTarget;
  /** Virtual size of the target. */
  sizeBytes: number;
  /** Bytes of data copied (zeros are skipped). */
  dataBytes: number;
}

/** Read granularity for raw and fixed targets. */
const CHUNK = 8 * 1024 * 1024;
/** Bytes read per call when building a dynamic VHD. */
const GROUP_BYTES = 8 * 1024 * 1024;
/**
 * Reads in flight ahead of the writer: three reads plus the write fill libuv's default four
 * threads exactly; more would queue the write behind reads.
 */
const READ_AHEAD = 3;

export async function convertDisk(src: string, dst: string, opts: ConvertOptions): Promise<ConvertResult> {
  if (!CONVERT_TARGETS.includes(opts.to)) {
    throw vhdError('FD_DISK_BAD_FORMAT', `cannot convert to "${opts.to}"`, `use one of ${CONVERT_TARGETS.join(', ')}`);
  }
  const source = resolve(src);
  const target = resolve(dst);
  if (source === target) throw vhdError('FD_DISK_EXISTS', 'source and target are the same file');
  await assertAbsent(target);
  const format = await probeFormat(source);
  const temps: string[] = [];
  try {
    let readable = source;
    if (format === 'qcow2' || format === 'vmdk') {
      // Not our formats: let qemu-img flatten them to a sparse raw file we can stream.
      readable = tempPathFor(target) + '.raw';
      temps.push(readable);
      await run(
        'qemu-img',
        ['convert', '-f', format, '-O', 'raw', source, readable],
        opts.signal ? { signal: opts.signal } : {},
      );
    }
    if (opts.to === 'qcow2') return await toQcow2(source, readable, format, target, opts, temps);
    const dev = await openDisk(readable, { format: format === 'vhd' ? 'vhd' : 'raw', mapHoles: true });
    try {
      const dataBytes = await produceFileAtomic(target, (tmp) => writeTarget(dev, tmp, opts));
      return { source, target, to: opts.to, sizeBytes: targetSize(dev.sizeBytes, opts.to), dataBytes };
    } finally {
      await dev.close();
    }
  } finally {
    for (const t of temps) await unlink(t).catch(() => undefined);
  }
}

function targetSize(sourceBytes: number, to: ConvertTarget): number {
  // A VHD holds whole sectors; a raw file of odd length gains a zero tail.
  return to === 'raw' ? sourceBytes : roundUp(sourceBytes, SECTOR);
}

async function toQcow2(
  source: string,
  readable: string,
  format: string,
  target: string,
  opts: ConvertOptions,
  temps: string[],
): Promise<ConvertResult> {
  let rawPath = readable;
  if (format === 'vhd') {
    // QEMU's vpc driver ignores differencing chains and sector bitmaps: go through our engine.
    rawPath = tempPathFor(target) + '.raw';
    temps.push(rawPath);
    const dev = await openDisk(source, { format: 'vhd' });
    try {
      await writeTarget(dev, rawPath, { ...opts, to: 'raw' });
    } finally {
      await dev.close();
    }
  }
  const dev = await openDisk(rawPath, { format: 'raw' });
  const sizeBytes = dev.sizeBytes;
  await dev.close();
  await produceFileAtomic(target, async (tmp) => {
    await run(
      'qemu-img',
      ['convert', '-f', 'raw', '-O', 'qcow2', rawPath, tmp],
      opts.signal ? { signal: opts.signal } : {},
    );
  });
  return { source, target, to: 'qcow2', sizeBytes, dataBytes: sizeBytes };
}

const zeroCache = Buffer.alloc(DEFAULT_BLOCK_SIZE * 4);
function isZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += zeroCache.length) {
    const n = Math.min(zeroCache.length, buf.length - off);
    if (!buf.subarray(off, off + n).equals(zeroCache.subarray(0, n))) return false;
  }
  return true;
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new FdError('FD_CANCELLED', 'conversion cancelled; nothing was written');
}

/** True when blockStatus says [off, off+len) reads as zeros, so it need not be read at all. */
async function knownZero(dev: BlockDevice, off: number, len: number): Promise<boolean> {
  const ext = await dev.blockStatus(off, len);
  return ext.every((e) => e.zero);
}

/**
 * Copies `dev` into a new file at `tmp` in the target format; returns the data bytes written.
 * Reads run one chunk ahead of writes so the disk is never idle waiting for us.
 */
async function writeTarget(dev: BlockDevice, tmp: string, opts: ConvertOptions): Promise<number> {
  const size = dev.sizeBytes;
  const progress = new Progress(size, opts.onProgress);
  const fh = await open(tmp, 'wx', 0o644);
  let dataBytes = 0;
  try {
    if (opts.to === 'vhd') {
      const vsize = targetSize(size, 'vhd');
      checkNewSize(vsize);
      const blockSize = opts.blockSizeBytes ?? DEFAULT_BLOCK_SIZE;
      const writer = new DynamicVhdWriter(fh, planDynamic(newFooter('dynamic', vsize), blockSize, null));
      const blocks = Math.ceil(size / blockSize);
      // Read GROUP blocks per call and append the non-zero ones with one vectored write.
      const group = Math.max(1, Math.floor(GROUP_BYTES / blockSize));
      const pool = bufferPool(dev, group * blockSize);
      await pipeline(
        Math.ceil(blocks / group),
        async (g) => {
          const off = g * group * blockSize;
          const len = Math.min(group * blockSize, size - off);
          if (await knownZero(dev, off, len)) return null;
          return pool(g, off, len);
        },
        async (g, data) => {
          checkAbort(opts.signal);
          if (data) {
            const keep: Array<[number, Buffer]> = [];
            for (let k = 0; k * blockSize < data.length; k++) {
              const b = data.subarray(k * blockSize, Math.min(data.length, (k + 1) * blockSize));
              if (!isZero(b)) keep.push([g * group + k, b]);
            }
            if (keep.length) await writer.appendBlocks(keep);
            dataBytes += keep.reduce((n, [, b]) => n + b.length, 0);
          }
          progress.report(Math.min(size, (g + 1) * group * blockSize));
        },
      );
      await writer.finish();
    } else {
      const fixed = opts.to === 'vhd-fixed';
      const vsize = targetSize(size, opts.to);
      if (fixed) checkNewSize(vsize);
      await fh.truncate(vsize);
      const chunks = Math.ceil(size / CHUNK);
      const pool = bufferPool(dev, CHUNK);
      await pipeline(
        chunks,
        async (i) => {
          const off = i * CHUNK;
          const len = Math.min(CHUNK, size - off);
          if (await knownZero(dev, off, len)) return null;
          return pool(i, off, len);
        },
        async (i, data) => {
          checkAbort(opts.signal);
          if (data && !isZero(data)) {
            await writeAt(fh, i * CHUNK, data);
            dataBytes += data.length;
          }
          progress.report(Math.min(size, (i + 1) * CHUNK));
        },
      );
      if (fixed) await writeAt(fh, vsize, serializeFooter(newFooter('fixed', vsize)));
    }
    return dataBytes;
  } finally {
    await fh.close();
  }
}

/**
 * Reads for the pipeline into READ_AHEAD + 1 reused buffers (in flight plus the one being
 * written), when the source can read into a buffer; big fresh allocations cost page faults.
 */
function bufferPool(dev: BlockDevice, bytes: number): (i: number, off: number, len: number) => Promise<Buffer> {
  if (!(dev instanceof RawImage)) return (_i, off, len) => dev.read(off, len);
  const bufs: Buffer[] = [];
  return (i, off, len) => {
    const k = i % (READ_AHEAD + 1);
    bufs[k] ??= Buffer.allocUnsafe(bytes);
    return dev.readInto(bufs[k], off, len);
  };
}

/**
 * Runs read(i) up to `depth` steps ahead of write(i); writes happen in order. Several reads in
 * flight keep the disk's queue full, the way qemu-img's parallel coroutines do.
 */
async function pipeline<T>(
  count: number,
  read: (i: number) => Promise<T>,
  write: (i: number, v: T) => Promise<void>,
  depth = READ_AHEAD,
): Promise<void> {
  const inflight: Array<Promise<T>> = [];
  let next = 0;
  const fill = (): void => {
    while (next < count && inflight.length < depth) {
      const p = read(next++);
      p.catch(() => undefined); // handled when awaited; never an unhandled rejection
      inflight.push(p);
    }
  };
  fill();
  for (let i = 0; i < count; i++) {
    const value = await inflight.shift()!;
    fill();
    await write(i, value);
  }
}
