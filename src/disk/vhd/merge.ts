/**
 * `disk merge CHILD`: folds a differencing disk into its parent, then removes the child.
 *
 * No data is lost at any point: the child is only read until the very end, and the parent
 * changes only in sectors the child overrides, so the chain seen through the child reads the
 * same before, during and after the copy. A crash mid-way leaves a working chain; running merge
 * again redoes it (copies are idempotent). A small journal beside the child records how far a
 * flushed copy got, so a resumed merge skips the blocks already done. Order at the end: parent
 * fsync, journal removed, child removed.
 */
import { readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDir, writeFileAtomic } from '../../core/atomic-file.js';
import { isErrno } from '../../core/errors.js';
import { Progress, type ProgressListener } from '../../core/progress.js';
import { bitRuns, UNUSED } from './bat.js';
import { vhdError } from './errors.js';
import { VhdImage } from './image.js';
import { assertNotInUse } from './in-use.js';
import { SECTOR } from './io.js';
import { resizeVhd } from './resize.js';

export interface MergeResult {
  child: string;
  parent: string;
  blocksMerged: number;
  bytesMerged: number;
  /** The block a resumed merge started from (0 for a fresh one). */
  resumedFromBlock: number;
  childRemoved: boolean;
}

interface Journal {
  childUuid: string;
  parentUuid: string;
  parent: string;
  nextBlock: number;
}

/** Blocks copied between parent flushes + journal updates. */
const FLUSH_EVERY_BLOCKS = 64;

export function journalPath(child: string): string {
  return `${child}.merge-journal`;
}

export async function mergeVhd(
  childPath: string,
  opts: { onProgress?: ProgressListener; keepChild?: boolean; flushEveryBlocks?: number } = {},
): Promise<MergeResult> {
  const child = await VhdImage.open(childPath);
  let parentPath: string;
  let parentUuid: string;
  try {
    if (!child.parent) {
      throw vhdError(
        'FD_VHD_NOT_DIFFERENCING',
        `${child.path} is a ${child.diskType} disk; only a differencing disk can be merged into its parent`,
      );
    }
    parentPath = child.parent.path;
    parentUuid = child.parent.uuid;
    // Our own read handles are the only ones allowed (openersOf skips this process).
    await assertNotInUse(child.path, 'merging');
    await assertNotInUse(parentPath, 'merging into it');
    if (child.sizeBytes > child.parent.sizeBytes) {
      // The child was grown: grow the parent first (same data, more room).
      await child.parent.close();
      await resizeVhd(parentPath, child.sizeBytes);
    }
  } catch (err) {
    await child.close();
    throw err;
  }
  const jpath = journalPath(child.path);
  let start = 0;
  const journal = await readJournal(jpath);
  if (journal) {
    if (journal.childUuid !== child.uuid || journal.parentUuid !== parentUuid) {
      await child.close();
      throw vhdError(
        'FD_VHD_MERGE_CONFLICT',
        `${jpath} belongs to another merge (child ${journal.childUuid}, parent ${journal.parentUuid})`,
        'remove the journal if you are sure no merge of that chain is pending',
      );
    }
    start = journal.nextBlock;
  }
  // With its own parents open, so a differencing parent's partial blocks keep reading through.
  const parent = await VhdImage.open(parentPath, { write: true });
  let blocksMerged = 0;
  let bytesMerged = 0;
  try {
    const bat = child.bat!;
    const bs = child.blockSize;
    const progress = new Progress(bat.length, opts.onProgress, 'items');
    await writeFileAtomic(
      jpath,
      JSON.stringify({ childUuid: child.uuid, parentUuid, parent: parentPath, nextBlock: start } satisfies Journal),
    );
    const buf = Buffer.alloc(bs);
    for (let blk = start; blk < bat.length; blk++) {
      if (bat[blk] !== UNUSED && blk * bs < child.sizeBytes) {
        const bm = await child.bitmap(blk);
        const sectors = Math.min(child.sectorsPerBlock, (child.sizeBytes - blk * bs) / SECTOR);
        for (const [s, cnt, present] of bitRuns(bm, 0, sectors)) {
          if (!present) continue;
          await child.readBlockData(blk, s * SECTOR, cnt * SECTOR, buf);
          await parent.write(blk * bs + s * SECTOR, buf.subarray(0, cnt * SECTOR));
          bytesMerged += cnt * SECTOR;
        }
        blocksMerged++;
      }
      if ((blk + 1) % (opts.flushEveryBlocks ?? FLUSH_EVERY_BLOCKS) === 0) {
        await parent.flush();
        await writeFileAtomic(
          jpath,
          JSON.stringify({
            childUuid: child.uuid,
            parentUuid,
            parent: parentPath,
            nextBlock: blk + 1,
          } satisfies Journal),
        );
      }
      progress.report(blk + 1);
    }
    await parent.flush();
    progress.finish();
  } finally {
    await parent.close();
    await child.close();
  }
  await unlink(jpath);
  if (!opts.keepChild) await unlink(child.path);
  await fsyncDir(dirname(child.path));
  return {
    child: child.path,
    parent: parentPath,
    blocksMerged,
    bytesMerged,
    resumedFromBlock: start,
    childRemoved: !opts.keepChild,
  };
}

async function readJournal(path: string): Promise<Journal | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
  try {
    const j = JSON.parse(text) as Journal;
    if (typeof j.nextBlock === 'number' && typeof j.childUuid === 'string') return j;
  } catch {
    // fall through: an unreadable journal only costs a full re-copy
  }
  return null;
}
