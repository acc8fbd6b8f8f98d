/**
 * `disk check`: every problem in a VHD (and its parents), found by reading the raw structures
 * rather than by opening the image, so one broken field does not hide the others. qemu-img has
 * no checker for VHD, so this is the only one there is.
 *
 * `--repair` fixes only what can be fixed without guessing: a lost or damaged trailing footer
 * is rebuilt from the intact copy at offset 0 (and written where the data ends), a damaged or
 * stale copy at 0 is rewritten from the intact trailing footer. Anything else is reported.
 */
import { stat, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isFdError } from '../../core/errors.js';
import { batBytes, bitmapBytes, parseBat, UNUSED } from './bat.js';
import { isFile, locatorInFile, parentCandidates, readLocators } from './chain.js';
import {
  HEADER_SIZE,
  headerChecksumOk,
  isPowerOfTwo,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  parseDynamicHeader,
  type DynamicHeader,
} from './dynamic-header.js';
import { FOOTER_SIZE, footerChecksumOk, hasFooterCookie, parseFooter, vhdChecksum, type Footer } from './footer.js';
import { MAX_VHD_BYTES, virtualSizeOf } from './geometry.js';
import { VhdImage } from './image.js';
import { assertNotInUse } from './in-use.js';
import { openImageFile, readAt, roundUp, SECTOR, writeAt } from './io.js';

export interface Problem {
  code: string;
  message: string;
  /** The image the problem is in (the checked image or one of its parents). */
  path: string;
  repairable: boolean;
}

export interface CheckResult {
  path: string;
  clean: boolean;
  problems: Problem[];
  /** What --repair fixed (empty without --repair). */
  repaired: Problem[];
}

export async function checkVhd(path: string, opts: { repair?: boolean } = {}): Promise<CheckResult> {
  const abs = resolve(path);
  let problems = await checkChain(abs);
  const repaired: Problem[] = [];
  if (opts.repair && problems.some((p) => p.repairable && p.path === abs)) {
    await assertNotInUse(abs, 'repairing');
    await repairFooters(
      abs,
      problems.filter((p) => p.repairable && p.path === abs),
    );
    const after = await checkChain(abs);
    for (const p of problems) {
      if (p.repairable && p.path === abs && !after.some((a) => a.code === p.code && a.path === p.path))
        repaired.push(p);
    }
    problems = after;
  }
  return { path: abs, clean: problems.length === 0, problems, repaired };
}

async function checkChain(abs: string): Promise<Problem[]> {
  const problems: Problem[] = [];
  const seen = new Set<string>();
  let current: string | null = abs;
  while (current && !seen.has(current)) {
    seen.add(current);
    const { problems: own, parent } = await checkOne(current);
    problems.push(...own);
    current = parent;
  }
  return problems;
}

interface Scan {
  problems: Problem[];
  parent: string | null;
}

async function checkOne(path: string): Promise<Scan> {
  const problems: Problem[] = [];
  const add = (code: string, message: string, repairable = false): void => {
    problems.push({ code, message, path, repairable });
  };
  const fh: FileHandle = await openImageFile(path, 'r');
  try {
    const fileSize = (await fh.stat()).size;
    if (fileSize < FOOTER_SIZE) {
      add('FD_VHD_TRUNCATED', `file is ${fileSize} bytes, too short for a VHD footer`);
      return { problems, parent: null };
    }
    if (fileSize % SECTOR !== 0) add('FD_VHD_MISALIGNED', `file size ${fileSize} is not a multiple of 512 bytes`);

    const tailBuf = await readAt(fh, fileSize - FOOTER_SIZE, FOOTER_SIZE, 'the footer');
    const headBuf = fileSize >= 2 * FOOTER_SIZE ? await readAt(fh, 0, FOOTER_SIZE, 'the footer copy') : null;
    const tailOk = hasFooterCookie(tailBuf) && footerChecksumOk(tailBuf);
    const headCookie = headBuf !== null && hasFooterCookie(headBuf);
    const headOk = headCookie && footerChecksumOk(headBuf!);
    const headFooter = headOk ? safeParse(headBuf!) : null;
    const tailFooter = tailOk ? safeParse(tailBuf) : null;
    const headDynamic = headFooter !== null && headFooter.diskType !== 'fixed';

    if (!hasFooterCookie(tailBuf)) {
      if (headDynamic) {
        add(
          'FD_VHD_FOOTER_MISSING',
          'the trailing footer is missing (crash while the file grew); the copy at offset 0 is intact',
          true,
        );
      } else if (!headCookie) {
        add('FD_VHD_BAD_COOKIE', 'no VHD footer: neither the end of the file nor offset 0 holds "conectix"');
        return { problems, parent: null };
      }
    } else if (!tailOk) {
      add(
        'FD_VHD_BAD_CHECKSUM',
        `trailing footer checksum is wrong (stored 0x${tailBuf.readUInt32BE(64).toString(16)}, computed 0x${vhdChecksum(tailBuf, 64).toString(16)})${uuidBugNote(tailBuf)}`,
        headDynamic || uuidChecksumBug(tailBuf),
      );
    }
    // The reference footer: the intact trailing one, else the intact copy, else the damaged one (to keep looking).
    const footer = tailFooter ?? (headDynamic ? headFooter : null) ?? unverified(tailBuf) ?? unverified(headBuf);
    if (!footer) {
      // The footer has the cookie but a field that cannot be (absurd size, unknown type): say which.
      const err = parseError(tailBuf) ?? (headBuf ? parseError(headBuf) : null);
      add(err?.code ?? 'FD_VHD_BAD_HEADER', err?.message ?? 'the footer names no valid disk type');
      return { problems, parent: null };
    }
    if (footer.diskType !== 'fixed' && headBuf) {
      if (!headCookie) {
        if (tailOk) add('FD_VHD_FOOTER_MISMATCH', 'the footer copy at offset 0 is missing', true);
      } else if (!headOk) {
        add(
          'FD_VHD_BAD_CHECKSUM',
          `footer copy at offset 0 has a wrong checksum (stored 0x${headBuf.readUInt32BE(64).toString(16)}, computed 0x${vhdChecksum(headBuf, 64).toString(16)})${uuidBugNote(headBuf)}`,
          tailOk || uuidChecksumBug(headBuf),
        );
      } else if (tailOk && !headBuf.equals(tailBuf)) {
        add('FD_VHD_FOOTER_MISMATCH', 'the footer copy at offset 0 differs from the trailing footer', true);
      }
    }

    const virtualSize = virtualSizeOf(footer);
    if (footer.currentSize % SECTOR !== 0) {
      add('FD_VHD_BAD_SIZE', `current size ${footer.currentSize} is not a multiple of 512`);
    }
    if (virtualSize > MAX_VHD_BYTES) {
      add('FD_VHD_BAD_SIZE', `virtual size ${virtualSize} is beyond the VHD limit of 2040 GiB`);
      return { problems, parent: null };
    }
    if (footer.diskType === 'fixed') {
      if (fileSize - FOOTER_SIZE < virtualSize) {
        add(
          'FD_VHD_TRUNCATED',
          `fixed disk of ${virtualSize} bytes holds only ${fileSize - FOOTER_SIZE} bytes of data`,
        );
      }
      return { problems, parent: null };
    }
    return await checkDynamic(path, fh, fileSize, footer, virtualSize, add, problems);
  } finally {
    await fh.close();
  }
}

async function checkDynamic(
  path: string,
  fh: FileHandle,
  fileSize: number,
  footer: Footer,
  virtualSize: number,
  add: (code: string, message: string, repairable?: boolean) => void,
  problems: Problem[],
): Promise<Scan> {
  if (footer.dataOffset % SECTOR !== 0 || footer.dataOffset < FOOTER_SIZE) {
    add('FD_VHD_MISALIGNED', `dynamic header offset ${footer.dataOffset} is not a sector past the footer copy`);
    return { problems, parent: null };
  }
  if (footer.dataOffset + HEADER_SIZE > fileSize) {
    add('FD_VHD_TRUNCATED', `dynamic header at ${footer.dataOffset} is past the end of the file`);
    return { problems, parent: null };
  }
  const hbuf = await readAt(fh, footer.dataOffset, HEADER_SIZE, 'the dynamic header');
  if (hbuf.toString('latin1', 0, 8) !== 'cxsparse') {
    add('FD_VHD_BAD_COOKIE', 'dynamic disk header is not "cxsparse"');
    return { problems, parent: null };
  }
  if (!headerChecksumOk(hbuf)) {
    add(
      'FD_VHD_BAD_CHECKSUM',
      `dynamic disk header checksum is wrong (stored 0x${hbuf.readUInt32BE(36).toString(16)}, computed 0x${vhdChecksum(hbuf, 36).toString(16)})`,
    );
  }
  const blockSize = hbuf.readUInt32BE(32);
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    add('FD_VHD_BAD_BLOCK_SIZE', `block size ${blockSize} is not a power of two between 512 B and 256 MiB`);
    return { problems, parent: null };
  }
  let header: DynamicHeader;
  try {
    header = parseDynamicHeader(hbuf, false);
  } catch (err) {
    if (!isFdError(err)) throw err;
    add(err.code, err.message);
    return { problems, parent: null };
  }
  const entries = header.maxTableEntries;
  if (header.tableOffset % SECTOR !== 0 || header.tableOffset < FOOTER_SIZE) {
    add('FD_VHD_MISALIGNED', `BAT offset ${header.tableOffset} is not sector-aligned past the footer copy`);
    return { problems, parent: null };
  }
  if (entries * blockSize < virtualSize) {
    add(
      'FD_VHD_BAD_HEADER',
      `BAT covers ${entries} blocks of ${blockSize} bytes, less than the virtual size ${virtualSize}`,
    );
  }
  if (header.tableOffset + entries * 4 > fileSize) {
    add('FD_VHD_TRUNCATED', `BAT of ${entries} entries at ${header.tableOffset} runs past the end of the file`);
    return { problems, parent: null };
  }
  const bat = parseBat(await readAt(fh, header.tableOffset, entries * 4, 'the BAT'), entries);
  const bm = bitmapBytes(blockSize);
  const span = bm + blockSize;
  const regions: Array<[number, number, string]> = [
    [0, FOOTER_SIZE, 'the footer copy'],
    [footer.dataOffset, footer.dataOffset + HEADER_SIZE, 'the dynamic header'],
    [header.tableOffset, header.tableOffset + batBytes(entries), 'the BAT'],
  ];
  header.locators.forEach((loc, i) => {
    if (!locatorInFile(loc, fileSize)) {
      add(
        'FD_VHD_BAD_LOCATOR',
        `parent locator ${i} (${loc.platformCode}) at ${loc.dataOffset}+${loc.dataLength} is outside the file`,
      );
    } else {
      regions.push([loc.dataOffset, loc.dataOffset + roundUp(loc.dataLength, SECTOR), `parent locator ${i}`]);
    }
  });
  const blocks: Array<[number, number]> = [];
  let dataEnd = Math.max(...regions.map((r) => r[1]));
  let pastEof = 0;
  for (let i = 0; i < entries; i++) {
    const e = bat[i]!;
    if (e === UNUSED) continue;
    const start = e * SECTOR;
    if (i * blockSize >= virtualSize)
      add('FD_VHD_BAD_HEADER', `BAT entry ${i} is allocated but lies past the virtual size`);
    const used = Math.min(blockSize, Math.max(0, virtualSize - i * blockSize));
    if (start + bm + used > fileSize) {
      if (pastEof++ < 20)
        add('FD_VHD_BAT_PAST_EOF', `BAT entry ${i} points at byte ${start}, past the end of the file (${fileSize})`);
      continue;
    }
    for (const [rs, re, what] of regions) {
      if (start < re && start + span > rs) add('FD_VHD_BAT_OVERLAP', `block ${i} at byte ${start} overlaps ${what}`);
    }
    blocks.push([start, i]);
    dataEnd = Math.max(dataEnd, start + span);
  }
  if (pastEof > 20) add('FD_VHD_BAT_PAST_EOF', `${pastEof - 20} more BAT entries point past the end of the file`);
  blocks.sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < blocks.length; k++) {
    if (blocks[k]![0] < blocks[k - 1]![0] + span) {
      add(
        'FD_VHD_BAT_OVERLAP',
        `blocks ${blocks[k - 1]![1]} and ${blocks[k]![1]} overlap at bytes ${blocks[k - 1]![0]} and ${blocks[k]![0]}`,
      );
    }
  }
  // With the last block's tail sparse, the footer may sit anywhere from the used end to the block's end.
  if (
    hasFooterCookie(await readAt(fh, fileSize - FOOTER_SIZE, FOOTER_SIZE, 'the footer')) &&
    fileSize - FOOTER_SIZE < dataEnd - span
  ) {
    add('FD_VHD_BAT_OVERLAP', `the trailing footer at ${fileSize - FOOTER_SIZE} lies inside allocated data`);
  }

  if (footer.diskType !== 'differencing') return { problems, parent: null };
  // The parent link: resolve it exactly the way the data path does.
  let parent: string | null = null;
  try {
    const img = await VhdImage.open(path);
    try {
      parent = img.parent?.path ?? null;
      if (img.parentTimestampMismatch && img.parent) {
        add(
          'FD_VHD_PARENT_TIMESTAMP',
          `parent ${img.parent.path} has timestamp ${img.parent.footer.timestamp}, the child recorded ${header.parentTimestamp}: the parent was modified after the child was made`,
        );
      }
    } finally {
      await img.close();
    }
  } catch (err) {
    if (!isFdError(err)) throw err;
    if (
      ['FD_VHD_PARENT_NOT_FOUND', 'FD_VHD_PARENT_MISMATCH', 'FD_VHD_CHAIN_LOOP', 'FD_VHD_CHAIN_TOO_DEEP'].includes(
        err.code,
      )
    ) {
      add(err.code, err.message);
    } else if (!problems.length) {
      // A parent that is itself broken: check it too, so its own problems say how.
      add('FD_VHD_PARENT_BROKEN', `the parent chain does not open: ${err.message}`);
      const locs = await readLocators(fh, header, fileSize);
      for (const cand of parentCandidates(path, header, locs)) {
        if (await isFile(cand)) {
          parent = cand;
          break;
        }
      }
    }
  }
  return { problems, parent };
}

/**
 * Old qemu-img computed the footer checksum before it filled in the UUID. Such a footer is
 * recognized exactly (its checksum is right for the footer with the UUID zeroed), so fixing
 * the checksum is not a guess: every other field is as its writer meant.
 */
export function uuidChecksumBug(buf: Buffer): boolean {
  if (!hasFooterCookie(buf) || footerChecksumOk(buf)) return false;
  const copy = Buffer.from(buf);
  copy.fill(0, 68, 84);
  return vhdChecksum(copy, 64) === buf.readUInt32BE(64) && !buf.subarray(68, 84).equals(Buffer.alloc(16));
}

function uuidBugNote(buf: Buffer): string {
  return uuidChecksumBug(buf)
    ? '; it is the checksum of this footer with the UUID zeroed (old qemu-img set the UUID after summing), so --repair can recompute it'
    : '';
}

function fixChecksum(buf: Buffer): Buffer {
  const fixed = Buffer.from(buf);
  fixed.writeUInt32BE(vhdChecksum(fixed, 64), 64);
  return fixed;
}

function parseError(buf: Buffer): { code: string; message: string } | null {
  if (!hasFooterCookie(buf)) return null;
  try {
    parseFooter(buf, 'footer', false);
    return null;
  } catch (err) {
    if (isFdError(err)) return { code: err.code, message: err.message };
    throw err;
  }
}

function safeParse(buf: Buffer): Footer | null {
  try {
    return parseFooter(buf);
  } catch (err) {
    if (isFdError(err)) return null;
    throw err;
  }
}

function unverified(buf: Buffer | null): Footer | null {
  if (!buf || !hasFooterCookie(buf)) return null;
  try {
    return parseFooter(buf, 'footer', false);
  } catch (err) {
    if (isFdError(err)) return null;
    throw err;
  }
}

/** Where the trailing footer of a dynamic image belongs: just past everything the image references. */
async function dataEndOf(path: string): Promise<number> {
  const img = await VhdImage.open(path, { noParent: true });
  try {
    return img.nextFree;
  } finally {
    await img.close();
  }
}

async function repairFooters(path: string, fixable: Problem[]): Promise<void> {
  const fileSize = (await stat(path)).size;
  const fh = await openImageFile(path, 'r+');
  try {
    const tail = await readAt(fh, fileSize - FOOTER_SIZE, FOOTER_SIZE, 'the footer');
    const head = await readAt(fh, 0, FOOTER_SIZE, 'the footer copy');
    if (uuidChecksumBug(tail)) {
      // Tail first: one good copy exists at every step.
      await writeAt(fh, fileSize - FOOTER_SIZE, fixChecksum(tail));
      await fh.sync();
      if (uuidChecksumBug(head) && head.subarray(0, 64).equals(tail.subarray(0, 64))) {
        await writeAt(fh, 0, fixChecksum(head));
        await fh.sync();
      }
      return;
    }
    const tailOk = hasFooterCookie(tail) && footerChecksumOk(tail);
    const headOk = hasFooterCookie(head) && footerChecksumOk(head);
    if (
      !tailOk &&
      headOk &&
      fixable.some((p) => p.code === 'FD_VHD_FOOTER_MISSING' || p.code === 'FD_VHD_BAD_CHECKSUM')
    ) {
      // VhdImage opens from the copy at 0 when the tail is bad, so it can tell us where the data ends.
      await fh.close().catch(() => undefined);
      const end = await dataEndOf(path);
      const w = await openImageFile(path, 'r+');
      try {
        await writeAt(w, end, head);
        await w.truncate(end + FOOTER_SIZE);
        await w.sync();
      } finally {
        await w.close();
      }
      return;
    }
    if (tailOk && fixable.some((p) => p.code === 'FD_VHD_FOOTER_MISMATCH' || p.code === 'FD_VHD_BAD_CHECKSUM')) {
      await writeAt(fh, 0, tail);
      await fh.sync();
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
}
