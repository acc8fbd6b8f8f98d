/**
 * streamOptimized VMDK -> dynamic VHD from our VHD engine, in one pass over the input (an OVA
 * member arrives exactly once). Grains normally arrive in LBA order, so blocks are assembled in
 * memory and appended front to back with the engine's sequential writer (vectored writes, no
 * read-modify-write); if a stream ever goes backwards, the image is finished as it stands and
 * the rest is written through VhdImage's random access. The VHD is built under a temp name and
 * renamed only when complete: a failed import leaves nothing behind.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fsyncDir, tempPathFor } from '../../core/atomic-file.js';
import { checkNewSize, DynamicVhdWriter, newFooter, planDynamic } from '../vhd/create.js';
import { DEFAULT_BLOCK_SIZE } from '../vhd/dynamic-header.js';
import { VhdImage } from '../vhd/image.js';
import type { ByteSource } from './byte-reader.js';
import { streamVmdkToSink, type StreamVmdkOptions, type StreamVmdkResult } from './stream-reader.js';

/** Blocks appended per vectored write. */
const BATCH_BLOCKS = 8;

export async function streamVmdkToVhd(
  input: ByteSource,
  path: string,
  opts: StreamVmdkOptions & {
    blockSizeBytes?: number;
    /** Picks the VHD's virtual size from the VMDK's (may throw to refuse); default the same. */
    targetSizeBytes?: (vmdkSizeBytes: number) => number;
  } = {},
): Promise<StreamVmdkResult & { path: string; sequential: boolean; vhdSizeBytes: number }> {
  const abs = resolve(path);
  const tmp = tempPathFor(abs);
  const blockSize = opts.blockSizeBytes ?? DEFAULT_BLOCK_SIZE;
  let fh: FileHandle | undefined;
  let writer: DynamicVhdWriter | undefined;
  let img: VhdImage | undefined;
  let cur = -1;
  let block: Buffer | undefined;
  let dirty = false;
  let batch: Array<[number, Buffer]> = [];
  let vhdSizeBytes = 0;

  // One append stays in flight while the next blocks are inflated and assembled.
  let inFlight: Promise<void> = Promise.resolve();
  // Block buffers are reused once their append is done: allocating 2 MiB per block keeps the
  // garbage collector busy for nothing.
  const free: Buffer[] = [];
  const newBlock = (): Buffer => {
    const b = free.pop();
    return b ? b.fill(0) : Buffer.alloc(blockSize);
  };
  const flushBatch = async (): Promise<void> => {
    await inFlight;
    if (batch.length) {
      const w = writer!;
      const b = batch;
      inFlight = w.appendBlocks(b).then(() => {
        for (const [, buf] of b) free.push(buf);
      });
      inFlight.catch(() => undefined);
    }
    batch = [];
  };
  const settle = async (): Promise<void> => {
    await flushBatch();
    await inFlight;
  };
  const closeBlock = async (): Promise<void> => {
    if (dirty) batch.push([cur, block!]);
    else if (block) free.push(block);
    block = undefined;
    dirty = false;
    if (batch.length >= BATCH_BLOCKS) await flushBatch();
  };
  /** Out-of-order data: finish the sequential image and continue with random access. */
  const switchToRandom = async (): Promise<void> => {
    await closeBlock();
    await settle();
    await writer!.finish();
    await fh!.close();
    fh = undefined;
    writer = undefined;
    img = await VhdImage.open(tmp, { write: true, unsafeNoSync: true });
  };

  try {
    const res = await streamVmdkToSink(
      input,
      {
        async begin({ sizeBytes }) {
          vhdSizeBytes = opts.targetSizeBytes ? opts.targetSizeBytes(sizeBytes) : sizeBytes;
          checkNewSize(vhdSizeBytes);
          fh = await open(tmp, 'wx', 0o644);
          writer = new DynamicVhdWriter(fh, planDynamic(newFooter('dynamic', vhdSizeBytes), blockSize, null));
        },
        async write(offset, data) {
          if (img) return img.write(offset, data);
          let done = 0;
          while (done < data.length) {
            const pos = offset + done;
            const blk = Math.floor(pos / blockSize);
            if (blk < cur || (blk === cur && !block)) {
              await switchToRandom();
              return img!.write(pos, data.subarray(done));
            }
            if (blk > cur) {
              if (cur >= 0) await closeBlock();
              cur = blk;
              block = newBlock();
            }
            const inBlock = pos - blk * blockSize;
            const n = Math.min(data.length - done, blockSize - inBlock);
            data.copy(block!, inBlock, done, done + n);
            dirty = true;
            done += n;
          }
        },
      },
      opts,
    );
    const sequential = !img;
    if (img) {
      await img.flush();
      await img.close();
      img = undefined;
    } else {
      if (cur >= 0) await closeBlock();
      await settle();
      await writer!.finish();
    }
    // Durable before it gets its real name (VhdImage.close already synced in the random path).
    if (fh) {
      await fh.sync();
      await fh.close();
      fh = undefined;
    }
    await rename(tmp, abs);
    await fsyncDir(dirname(abs));
    return { ...res, path: abs, sequential, vhdSizeBytes };
  } catch (err) {
    await inFlight.catch(() => undefined);
    if (img) await img.close().catch(() => undefined);
    if (fh) await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
