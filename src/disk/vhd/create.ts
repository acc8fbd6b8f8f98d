/**
 * Making new VHDs: fixed, dynamic and differencing children, plus the front-to-back writer that
 * convert and compact use to build a dynamic VHD in one sequential pass.
 *
 * Sizes are exact: the footer carries the size asked for, and the creator app is "win ", which
 * QEMU 7.2 (and every later QEMU), Hyper-V and Azure all size by the footer's current size
 * rather than by CHS geometry (see geometry.ts). The geometry is still the spec's, for tools
 * that want one. New files are written to a temp name and renamed into place, so a failed
 * create never leaves a half-made image under the real name.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, relative, resolve } from 'node:path';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { isErrno } from '../../core/errors.js';
import { MiB } from '../../core/units.js';
import { batBytes, bitmapBytes, UNUSED } from './bat.js';
import {
  DEFAULT_BLOCK_SIZE,
  encodeUtf16,
  HEADER_SIZE,
  isPowerOfTwo,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  serializeDynamicHeader,
  type DynamicHeader,
  type ParentLocator,
} from './dynamic-header.js';
import { vhdError } from './errors.js';
import {
  FOOTER_SIZE,
  NO_DATA_OFFSET,
  newUniqueId,
  serializeFooter,
  vhdTimestampNow,
  type DiskType,
  type Footer,
} from './footer.js';
import { geometryFor, MAX_VHD_BYTES } from './geometry.js';
import { VhdImage } from './image.js';
import { roundUp, SECTOR, writeAt } from './io.js';

export type VhdType = 'dynamic' | 'fixed';

export interface CreateVhdOptions {
  sizeBytes: number;
  /** Default dynamic. */
  type?: VhdType;
  /** Dynamic block size; default 2 MiB (what Hyper-V, Azure and qemu-img use). */
  blockSizeBytes?: number;
  /** Azure's rules: fixed, virtual size a whole number of MiB (rounded up). */
  azure?: boolean;
}

export interface CreatedVhd {
  path: string;
  type: DiskType;
  sizeBytes: number;
  blockSize: number;
  uuid: string;
  parent: string | null;
}

export const CREATOR_APP = 'win ';
/** Hyper-V's creator version (10.0); tools treat "win " with it like a Hyper-V image. */
const CREATOR_VERSION = 0x000a0000;

export function newFooter(diskType: DiskType, sizeBytes: number, uniqueId = newUniqueId()): Footer {
  return {
    features: 2,
    formatVersion: 0x00010000,
    dataOffset: diskType === 'fixed' ? NO_DATA_OFFSET : FOOTER_SIZE,
    timestamp: vhdTimestampNow(),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: 'Wi2k',
    originalSize: sizeBytes,
    currentSize: sizeBytes,
    geometry: geometryFor(sizeBytes),
    diskType,
    checksum: 0,
    uniqueId,
    savedState: 0,
  };
}

export function checkNewSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw vhdError('FD_VHD_BAD_SIZE', `size ${sizeBytes} is not a positive number of bytes`);
  }
  if (sizeBytes % SECTOR !== 0) {
    throw vhdError(
      'FD_VHD_BAD_SIZE',
      `size ${sizeBytes} is not a multiple of 512 bytes`,
      `use ${roundUp(sizeBytes, SECTOR)} (the next multiple of 512)`,
    );
  }
  if (sizeBytes > MAX_VHD_BYTES) {
    throw vhdError('FD_VHD_BAD_SIZE', `size ${sizeBytes} is beyond the VHD limit of 2040 GiB`, 'use a smaller size');
  }
}

export function checkBlockSize(blockSize: number): void {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw vhdError(
      'FD_VHD_BAD_BLOCK_SIZE',
      `block size ${blockSize} is not a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE} bytes`,
      'use the default 2 MiB',
    );
  }
}

/** A new image's path must be free and its directory must exist. */
export async function assertAbsent(path: string): Promise<void> {
  try {
    await stat(path);
  } catch (err) {
    if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    const dir = dirname(path);
    const st = await stat(dir).catch((e: unknown) => {
      if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return null;
      throw e;
    });
    if (!st?.isDirectory()) {
      throw vhdError('FD_DISK_NOT_FOUND', `directory ${dir} does not exist`, 'create the directory first', err);
    }
    return;
  }
  throw vhdError('FD_DISK_EXISTS', `${path} already exists`, 'remove it first or pick another name');
}

export async function createVhd(path: string, opts: CreateVhdOptions): Promise<CreatedVhd> {
  const abs = resolve(path);
  let sizeBytes = opts.sizeBytes;
  let type: VhdType = opts.type ?? 'dynamic';
  if (opts.azure) {
    if (opts.type === 'dynamic') {
      throw vhdError('FD_VHD_AZURE_FIXED', 'Azure accepts only fixed VHDs', 'drop --type dynamic when using --azure');
    }
    type = 'fixed';
    sizeBytes = roundUp(sizeBytes, MiB);
  }
  checkNewSize(sizeBytes);
  const blockSize = opts.blockSizeBytes ?? DEFAULT_BLOCK_SIZE;
  if (type === 'dynamic') checkBlockSize(blockSize);
  await assertAbsent(abs);
  const footer = newFooter(type, sizeBytes);
  await produceFileAtomic(abs, async (tmp) => {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      if (type === 'fixed') {
        await fh.truncate(sizeBytes);
        await writeAt(fh, sizeBytes, serializeFooter(footer));
      } else {
        const layout = planDynamic(footer, blockSize, null);
        await writeDynamicMetadata(fh, layout, new Uint32Array(layout.header.maxTableEntries).fill(UNUSED));
        await writeAt(fh, layout.firstBlockOffset, serializeFooter(footer));
      }
    } finally {
      await fh.close();
    }
  });
  return describe(abs, footer, type === 'fixed' ? 0 : blockSize, null);
}

/** A differencing child of `parentPath` (any VHD type); it records the parent's UUID, timestamp and paths. */
export async function createDifferencingVhd(path: string, parentPath: string): Promise<CreatedVhd> {
  const abs = resolve(path);
  const parentAbs = resolve(parentPath);
  await assertAbsent(abs);
  const parent = await VhdImage.open(parentAbs);
  let footer: Footer;
  let layout: DynamicLayout;
  try {
    footer = newFooter('differencing', parent.sizeBytes);
    const blockSize = parent.blockSize || DEFAULT_BLOCK_SIZE;
    layout = planDynamic(footer, blockSize, {
      uuid: parent.footer.uniqueId,
      timestamp: parent.footer.timestamp,
      name: basename(parentAbs),
      relativePath: windowsRelative(dirname(abs), parentAbs),
      absolutePath: parentAbs,
    });
  } finally {
    await parent.close();
  }
  await produceFileAtomic(abs, async (tmp) => {
    const fh = await open(tmp, 'wx', 0o644);
    try {
      await writeDynamicMetadata(fh, layout, new Uint32Array(layout.header.maxTableEntries).fill(UNUSED));
      await writeAt(fh, layout.firstBlockOffset, serializeFooter(footer));
    } finally {
      await fh.close();
    }
  });
  return describe(abs, footer, layout.header.blockSize, parentAbs);
}

function windowsRelative(fromDir: string, to: string): string {
  const rel = relative(fromDir, to).replace(/\//g, '\\');
  return rel.startsWith('..') ? rel : `.\\${rel}`;
}

function describe(path: string, footer: Footer, blockSize: number, parent: string | null): CreatedVhd {
  const h = footer.uniqueId.toString('hex');
  return {
    path,
    type: footer.diskType,
    sizeBytes: footer.currentSize,
    blockSize,
    uuid: `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`,
    parent,
  };
}

// ---- layout of a new dynamic/differencing file -----------------------------------------------

export interface ParentRef {
  uuid: Buffer;
  timestamp: number;
  name: string;
  relativePath: string;
  absolutePath: string;
}

export interface DynamicLayout {
  footer: Footer;
  header: DynamicHeader;
  /** Locator payloads to write at header.locators[i].dataOffset. */
  locatorData: Buffer[];
  /** Where block data (or the trailing footer of an empty image) starts. */
  firstBlockOffset: number;
}

/** Footer copy at 0, header at 512, BAT at 1536, parent locators after it, blocks after those. */
export function planDynamic(footer: Footer, blockSize: number, parent: ParentRef | null): DynamicLayout {
  const entries = Math.ceil(footer.currentSize / blockSize);
  const tableOffset = FOOTER_SIZE + HEADER_SIZE;
  let at = tableOffset + batBytes(entries);
  const locators: ParentLocator[] = [];
  const locatorData: Buffer[] = [];
  if (parent) {
    for (const [code, text] of [
      ['W2ru', parent.relativePath],
      ['W2ku', parent.absolutePath],
    ] as const) {
      const data = encodeUtf16(text, 'le');
      const space = roundUp(data.length, SECTOR);
      // Windows records the reserved space in bytes (the spec says sectors); readers accept both.
      locators.push({ platformCode: code, dataSpace: space, dataLength: data.length, dataOffset: at });
      locatorData.push(data);
      at += space;
    }
  }
  const header: DynamicHeader = {
    tableOffset,
    headerVersion: 0x00010000,
    maxTableEntries: entries,
    blockSize,
    checksum: 0,
    parentUuid: parent ? parent.uuid : Buffer.alloc(16),
    parentTimestamp: parent ? parent.timestamp : 0,
    parentName: parent ? parent.name : '',
    locators,
  };
  return { footer, header, locatorData, firstBlockOffset: at };
}

/** Writes footer copy, header, BAT and locators (not the trailing footer). */
export async function writeDynamicMetadata(fh: FileHandle, layout: DynamicLayout, bat: Uint32Array): Promise<void> {
  const batBuf = Buffer.alloc(batBytes(bat.length), 0xff);
  for (let i = 0; i < bat.length; i++) batBuf.writeUInt32BE(bat[i]!, i * 4);
  const meta = Buffer.alloc(FOOTER_SIZE + HEADER_SIZE);
  serializeFooter(layout.footer).copy(meta, 0);
  serializeDynamicHeader(layout.header).copy(meta, FOOTER_SIZE);
  await writeAt(fh, 0, meta);
  await writeAt(fh, layout.header.tableOffset, batBuf);
  for (let i = 0; i < layout.header.locators.length; i++) {
    const loc = layout.header.locators[i]!;
    const padded = Buffer.alloc(roundUp(loc.dataLength, SECTOR));
    layout.locatorData[i]!.copy(padded);
    await writeAt(fh, loc.dataOffset, padded);
  }
}

/**
 * Builds a dynamic (or differencing) VHD front to back in a file nobody else has open: blocks
 * are appended in one sequential stream, BAT and footers are written at the end. Far faster
 * than going through VhdImage (no per-block BAT/footer writes or syncs), and the caller renames
 * the file into place only when it is complete.
 */
export class DynamicVhdWriter {
  readonly bat: Uint32Array;
  private next: number;
  readonly bitmapSize: number;
  private readonly fullBitmap: Buffer;

  constructor(
    private readonly fh: FileHandle,
    readonly layout: DynamicLayout,
  ) {
    this.bat = new Uint32Array(layout.header.maxTableEntries).fill(UNUSED);
    this.next = layout.firstBlockOffset;
    this.bitmapSize = bitmapBytes(layout.header.blockSize);
    this.fullBitmap = Buffer.alloc(this.bitmapSize, 0xff);
  }

  get blockSize(): number {
    return this.layout.header.blockSize;
  }

  /**
   * Appends block `blk` (data shorter than a block leaves the rest sparse, reading as zeros).
   * `bitmap` defaults to all sectors present.
   */
  async appendBlock(blk: number, data: Buffer, bitmap?: Buffer): Promise<void> {
    await this.appendBlocks([[blk, data, bitmap]]);
  }

  /** Appends several blocks with one vectored write: they are contiguous in the file. */
  async appendBlocks(blocks: Array<[number, Buffer, Buffer?]>): Promise<void> {
    const start = this.next;
    const iov: Buffer[] = [];
    let total = 0;
    blocks.forEach(([blk, data, bitmap], k) => {
      const bm = bitmap ?? this.fullBitmap;
      iov.push(bm, data);
      total += bm.length + data.length;
      this.bat[blk] = this.next / SECTOR;
      this.next += this.bitmapSize + this.blockSize;
      if (data.length < this.blockSize && k < blocks.length - 1) {
        const pad = Buffer.alloc(this.blockSize - data.length);
        iov.push(pad);
        total += pad.length;
      }
    });
    let written = 0;
    // Linux caps one writev at 1024 buffers; we pass far fewer, but a short write is still possible.
    const { bytesWritten } = await this.fh.writev(iov, start);
    written = bytesWritten;
    if (written < total) await writeAt(this.fh, start + written, Buffer.concat(iov).subarray(written));
  }

  /** Writes metadata and the trailing footer; the file is a complete VHD afterwards. */
  async finish(): Promise<void> {
    await writeDynamicMetadata(this.fh, this.layout, this.bat);
    await writeAt(this.fh, this.next, serializeFooter(this.layout.footer));
    await this.fh.truncate(this.next + FOOTER_SIZE);
  }
}
