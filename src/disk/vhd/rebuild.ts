/**
 * compact and resize-by-rewrite: a dynamic or differencing VHD is copied block by block into a
 * new file beside it (same UUID, timestamp and parent link, so children and parents still
 * match), dropping blocks that hold nothing, and renamed over the original. The original is
 * untouched until the rename, so a crash at any point leaves either the old or the new image.
 *
 * compact also drops blocks that are all zeros in a dynamic disk (they read as zeros anyway);
 * in a differencing disk only blocks with no sector present can go, since a zero sector there
 * hides the parent's data.
 */
import { open } from 'node:fs/promises';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { Progress, type ProgressListener } from '../../core/progress.js';
import { allSet, noneSet, UNUSED } from './bat.js';
import { readLocators } from './chain.js';
import { DynamicVhdWriter, newFooter, planDynamic, type DynamicLayout } from './create.js';
import { geometryFor } from './geometry.js';
import { VhdImage } from './image.js';
import { assertNotInUse } from './in-use.js';

export interface RebuildResult {
  path: string;
  blocksBefore: number;
  blocksAfter: number;
  fileSizeBefore: number;
  fileSizeAfter: number;
  sizeBytes: number;
}

export async function rebuildDynamic(
  path: string,
  opts: { newSizeBytes?: number; onProgress?: ProgressListener } = {},
): Promise<RebuildResult> {
  await assertNotInUse(path, 'rewriting the image');
  const img = await VhdImage.open(path, { noParent: true });
  try {
    const header = img.header!;
    const bat = img.bat!;
    const sizeBytes = opts.newSizeBytes ?? img.footer.currentSize;
    const footer = { ...img.footer, currentSize: sizeBytes };
    if (opts.newSizeBytes !== undefined) {
      // A grown disk must be sized by its current size whatever app made it.
      Object.assign(footer, {
        creatorApp: newFooter('dynamic', sizeBytes).creatorApp,
        geometry: geometryFor(sizeBytes),
      });
    }
    const layout: DynamicLayout = planDynamic(footer, header.blockSize, null);
    if (img.diskType === 'differencing') {
      // Keep the parent link as it was, locator text included.
      const locs = await readLocators(img.handle, header, img.fileSize);
      const planned = planDynamic(footer, header.blockSize, {
        uuid: header.parentUuid,
        timestamp: header.parentTimestamp,
        name: header.parentName,
        relativePath: locs.find((l) => l.platformCode === 'W2ru')?.raw ?? header.parentName,
        absolutePath: locs.find((l) => l.platformCode === 'W2ku')?.raw ?? header.parentName,
      });
      Object.assign(layout, planned);
    }
    const blocksBefore = bat.filter((e) => e !== UNUSED).length;
    const progress = new Progress(bat.length, opts.onProgress, 'items');
    let blocksAfter = 0;
    await produceFileAtomic(img.path, async (tmp) => {
      const fh = await open(tmp, 'wx', 0o644);
      try {
        const writer = new DynamicVhdWriter(fh, layout);
        const data = Buffer.alloc(header.blockSize);
        for (let blk = 0; blk < bat.length; blk++) {
          progress.report(blk);
          if (bat[blk] === UNUSED || blk >= writer.bat.length) continue;
          const bm = await img.bitmap(blk);
          if (noneSet(bm, img.sectorsPerBlock)) continue;
          if (img.diskType === 'differencing') {
            await img.readBlockData(blk, 0, header.blockSize, data);
            await writer.appendBlock(blk, data, bm);
          } else {
            // Sectors not present read as zeros, whatever bytes the file holds there.
            if (allSet(bm, img.sectorsPerBlock)) await img.readBlockData(blk, 0, header.blockSize, data);
            else {
              data.fill(0);
              data.set(
                await img.read(
                  blk * header.blockSize,
                  Math.min(header.blockSize, img.sizeBytes - blk * header.blockSize),
                ),
              );
            }
            if (isZero(data)) continue;
            await writer.appendBlock(blk, data);
          }
          blocksAfter++;
        }
        await writer.finish();
      } finally {
        await fh.close();
      }
    });
    progress.finish();
    const after = await VhdImage.open(img.path, { noParent: true });
    const fileSizeAfter = after.fileSize;
    await after.close();
    return { path: img.path, blocksBefore, blocksAfter, fileSizeBefore: img.fileSize, fileSizeAfter, sizeBytes };
  } finally {
    await img.close();
  }
}

const zeros = Buffer.alloc(2 * 1024 * 1024);
function isZero(buf: Buffer): boolean {
  for (let off = 0; off < buf.length; off += zeros.length) {
    const n = Math.min(zeros.length, buf.length - off);
    if (!buf.subarray(off, off + n).equals(zeros.subarray(0, n))) return false;
  }
  return true;
}
