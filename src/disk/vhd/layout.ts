/**
 * What an image may be trusted with when it opens: which footer copy to believe, and whether
 * the BAT's blocks fit inside the file without overlapping each other or the metadata (which
 * also says where the next block goes).
 */
import type { FileHandle } from 'node:fs/promises';
import { bitmapBytes, UNUSED } from './bat.js';
import { HEADER_SIZE, locatorSpaceBytes, type DynamicHeader } from './dynamic-header.js';
import { REPAIR_HINT, vhdError } from './errors.js';
import { FOOTER_SIZE, footerChecksumOk, hasFooterCookie, parseFooter, type Footer } from './footer.js';
import { readAt, roundUp, SECTOR } from './io.js';

/** Where the footer we trust came from: the end of the file, or the copy at offset 0 after a crash. */
export type FooterSource = 'tail' | 'head';

/**
 * The footer we trust: the trailing one when it is intact, else (dynamic/differencing only) the
 * copy at offset 0, which survives a crash while the file was growing.
 */
export async function readFooter(
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
export function validateLayout(
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
