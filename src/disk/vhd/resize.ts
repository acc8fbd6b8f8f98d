/**
 * `disk resize`: grow a VHD (shrinking would cut data a guest may hold, so it is refused).
 *
 * Fixed: the new trailing footer is written past the new end first, then the old footer's
 * sector is zeroed, so a valid footer exists at every step. Dynamic/differencing: when the BAT
 * has room before the first block, new BAT entries (unallocated), then the header, then the
 * footers are rewritten, each synced before the next, so a crash leaves the old or the new
 * size; otherwise the image is rebuilt into a new file with a bigger BAT and renamed over.
 * A grown image is sized by its current size ("win " creator) so every tool sees the new size.
 */
import { batBytes, UNUSED } from './bat.js';
import { locatorSpaceBytes, serializeDynamicHeader } from './dynamic-header.js';
import { vhdError } from './errors.js';
import { FOOTER_SIZE, serializeFooter, type Footer } from './footer.js';
import { geometryFor } from './geometry.js';
import { CREATOR_APP, checkNewSize } from './create.js';
import { VhdImage } from './image.js';
import { assertNotInUse } from './in-use.js';
import { SECTOR, writeAt } from './io.js';
import { rebuildDynamic } from './rebuild.js';

export interface ResizeResult {
  path: string;
  oldSizeBytes: number;
  sizeBytes: number;
  rewritten: boolean;
}

export async function resizeVhd(path: string, sizeBytes: number): Promise<ResizeResult> {
  checkNewSize(sizeBytes);
  await assertNotInUse(path, 'resizing');
  const img = await VhdImage.open(path, { write: true, noParent: true });
  const oldSize = img.sizeBytes;
  let closed = false;
  try {
    if (sizeBytes < oldSize) {
      throw vhdError(
        'FD_VHD_SHRINK',
        `${img.path} is ${oldSize} bytes; shrinking to ${sizeBytes} could cut data`,
        'give a size at least as large as the current one',
      );
    }
    if (sizeBytes === oldSize) return { path: img.path, oldSizeBytes: oldSize, sizeBytes, rewritten: false };
    const footer: Footer = {
      ...img.footer,
      currentSize: sizeBytes,
      geometry: geometryFor(sizeBytes),
      creatorApp: CREATOR_APP,
    };
    if (!img.bat) {
      const fh = img.handle;
      const oldFooterAt = img.fileSize - FOOTER_SIZE;
      // Data of a fixed disk spans the whole current size even where CHS sized it smaller.
      const dataEnd = Math.max(oldFooterAt, sizeBytes);
      await writeAt(fh, dataEnd, serializeFooter(footer));
      await fh.sync();
      await writeAt(fh, oldFooterAt, Buffer.alloc(FOOTER_SIZE));
      await fh.sync();
      return { path: img.path, oldSizeBytes: oldSize, sizeBytes, rewritten: false };
    }
    const header = img.header!;
    const entries = Math.ceil(sizeBytes / header.blockSize);
    if (entries <= img.bat.length) {
      await img.rewriteFooter(footer);
      return { path: img.path, oldSizeBytes: oldSize, sizeBytes, rewritten: false };
    }
    const batEnd = header.tableOffset + batBytes(entries);
    if (batEnd <= firstUsedAfterBat(img)) {
      const fh = img.handle;
      const grown = Buffer.alloc((entries - img.bat.length) * 4, 0xff);
      await writeAt(fh, header.tableOffset + img.bat.length * 4, grown);
      await fh.sync();
      await writeAt(fh, img.footer.dataOffset, serializeDynamicHeader({ ...header, maxTableEntries: entries }));
      await fh.sync();
      await img.rewriteFooter(footer);
      return { path: img.path, oldSizeBytes: oldSize, sizeBytes, rewritten: false };
    }
    await img.close();
    closed = true;
    await rebuildDynamic(img.path, { newSizeBytes: sizeBytes });
    return { path: img.path, oldSizeBytes: oldSize, sizeBytes, rewritten: true };
  } finally {
    if (!closed) await img.close();
  }
}

/** The first byte after the BAT that something else uses: a block, a locator, or the trailing footer. */
function firstUsedAfterBat(img: VhdImage): number {
  const header = img.header!;
  let first = img.nextFree;
  for (const e of img.bat!) if (e !== UNUSED && e * SECTOR > header.tableOffset) first = Math.min(first, e * SECTOR);
  for (const loc of header.locators) {
    if (loc.dataOffset > header.tableOffset && locatorSpaceBytes(loc) >= 0) first = Math.min(first, loc.dataOffset);
  }
  if (img.footer.dataOffset > header.tableOffset) first = Math.min(first, img.footer.dataOffset);
  return first;
}
