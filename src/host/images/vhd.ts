/**
 * Where the tiny image meets flightdeck's VHD engine: the raw disk the builder makes becomes a
 * dynamic VHD, and the host reads the guest's durable counter back out of any disk image.
 *
 * The VHD is written with the engine's DynamicVhdWriter and a footer whose timestamp and
 * unique id are derived from the content, so a rebuild gives the same bytes while two images
 * with different content never share an id (a differencing child checks its parent's id).
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { openDisk } from '../../disk/open.js';
import { DynamicVhdWriter, newFooter, planDynamic } from '../../disk/vhd/create.js';
import { DEFAULT_BLOCK_SIZE } from '../../disk/vhd/dynamic-header.js';
import { VHD_EPOCH_MS } from '../../disk/vhd/footer.js';
import { COUNTER_OFFSET_BYTES, readCounter } from './counter.js';

export interface VhdIdentity {
  /** Unix seconds stored as the VHD's creation time. */
  epochS: number;
}

/** Writes `raw` as a new dynamic VHD at `vhd` (temp + rename); all-zero blocks stay unallocated. */
export async function rawToDynamicVhd(raw: string, vhd: string, id: VhdIdentity): Promise<void> {
  const src = await open(raw, 'r');
  try {
    const sizeBytes = (await src.stat()).size;
    const blockSize = DEFAULT_BLOCK_SIZE;
    const hash = createHash('sha256');
    const blocks: Array<{ blk: number; data: Buffer }> = [];
    for (let blk = 0; blk * blockSize < sizeBytes; blk++) {
      const data = Buffer.alloc(blockSize);
      await src.read(data, 0, Math.min(blockSize, sizeBytes - blk * blockSize), blk * blockSize);
      hash.update(data);
      if (data.some((b) => b !== 0)) blocks.push({ blk, data });
    }
    const uniqueId = hash.digest().subarray(0, 16);
    uniqueId[6] = (uniqueId[6]! & 0x0f) | 0x40; // RFC 4122 version 4 layout, as tools expect
    uniqueId[8] = (uniqueId[8]! & 0x3f) | 0x80;
    const footer = {
      ...newFooter('dynamic', sizeBytes, uniqueId),
      timestamp: Math.floor((id.epochS * 1000 - VHD_EPOCH_MS) / 1000),
    };
    const layout = planDynamic(footer, blockSize, null);
    await produceFileAtomic(vhd, async (tmp) => {
      const fh = await open(tmp, 'wx', 0o644);
      try {
        const writer = new DynamicVhdWriter(fh, layout);
        for (const b of blocks) await writer.appendBlock(b.blk, b.data);
        await writer.finish();
      } finally {
        await fh.close();
      }
    });
  } finally {
    await src.close();
  }
}

/** The durable counter stored in a disk image (VHD chain or raw); null when none was written. */
export async function readCounterFromImage(path: string, offsetBytes = COUNTER_OFFSET_BYTES): Promise<bigint | null> {
  const dev = await openDisk(path);
  try {
    return await readCounter(dev, offsetBytes);
  } finally {
    await dev.close();
  }
}
