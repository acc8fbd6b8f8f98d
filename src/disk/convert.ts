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
    const dev = await openDisk(readable, { format: format === 'vhd' ? 'vhd' : 'raw' });
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
      await pipeline(
        blocks,
        async (i) => {
          const off = i * blockSize;
          const len = Math.min(blockSize, size - off);
          if (await knownZero(dev, off, len)) return null;
          return dev.read(off, len);
        },
        async (i, data) => {
          checkAbort(opts.signal);
          if (data && !isZero(data)) {
            await writer.appendBlock(i, data);
            dataBytes += data.length;
          }
          progress.report(Math.min(size, (i + 1) * blockSize));
        },
      );
      await writer.finish();
    } else {
      const fixed = opts.to === 'vhd-fixed';
      const vsize = targetSize(size, opts.to);
      if (fixed) checkNewSize(vsize);
      await fh.truncate(vsize);
      const chunks = Math.ceil(size / CHUNK);
      await pipeline(
        chunks,
        async (i) => {
          const off = i * CHUNK;
          const len = Math.min(CHUNK, size - off);
          if (await knownZero(dev, off, len)) return null;
          return dev.read(off, len);
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
    progress.finish();
    return dataBytes;
  } finally {
    await fh.close();
  }
}

/** Runs read(i) one step ahead of write(i), in order. */
async function pipeline<T>(
  count: number,
  read: (i: number) => Promise<T>,
  write: (i: number, v: T) => Promise<void>,
): Promise<void> {
  if (count === 0) return;
  let pending: Promise<T> = read(0);
  for (let i = 0; i < count; i++) {
    const value = await pending;
    if (i + 1 < count) pending = read(i + 1);
    try {
      await write(i, value);
    } catch (err) {
      // Do not leave the read-ahead's rejection unhandled.
      if (i + 1 < count) pending.catch(() => undefined);
      throw err;
    }
  }
}
