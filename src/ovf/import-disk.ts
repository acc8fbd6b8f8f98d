/**
 * One packaged disk -> one dynamic VHD: the disk half of `ovf import`. A streamOptimized VMDK
 * (what OVAs carry) converts while it streams out of the archive; anything else (a sparse
 * VMDK, qcow2, VHD, raw) is spooled to a temp file once and converted by the disk layer
 * (qemu-img for foreign formats, our engine for VHD and raw) once it is known to refer to no
 * other file (a VMDK extent, a qcow2 backing file, a VHD parent). The descriptor's capacity is
 * checked against the image's: an image larger than its declared capacity is refused, a
 * smaller one grows to the declared capacity (as VMware and VirtualBox do on import).
 */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { tempPathFor } from '../core/atomic-file.js';
import { FdError } from '../core/errors.js';
import { formatSize } from '../core/units.js';
import { convertDisk } from '../disk/convert.js';
import { assertSelfContained } from '../disk/references.js';
import { resizeVhd } from '../disk/vhd/resize.js';
import { streamVmdkToVhd } from '../disk/vmdk/to-vhd.js';
import type { OvfDisk } from './model.js';
import type { PackageFile } from './package.js';

export interface ImportDiskResult {
  path: string;
  /** The VHD's virtual size. */
  sizeBytes: number;
  /** What the packaged file turned out to hold. */
  detected: 'vmdk-streamOptimized' | 'vmdk' | 'qcow2' | 'vhd' | 'raw';
  streamed: boolean;
  warnings: string[];
}

export interface ImportDiskOptions {
  signal?: AbortSignal;
  /** Where spooled files go (default: beside the output). */
  workDir?: string;
}

/** The first bytes of a stream, and the stream again from its start. */
async function peek(body: AsyncIterable<Buffer>, n: number): Promise<{ head: Buffer; all: AsyncIterable<Buffer> }> {
  const it = body[Symbol.asyncIterator]();
  const got: Buffer[] = [];
  let have = 0;
  let ended = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    got.push(r.value);
    have += r.value.length;
  }
  const head = Buffer.concat(got);
  const all = (async function* () {
    yield* got;
    if (ended) return;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value;
  })();
  return { head: head.subarray(0, n), all };
}

function detect(head: Buffer): ImportDiskResult['detected'] {
  if (head.length >= 12 && head.toString('latin1', 0, 4) === 'KDMV') {
    const flags = head.readUInt32LE(8);
    return (flags & 0x30000) === 0x30000 ? 'vmdk-streamOptimized' : 'vmdk';
  }
  if (head.toString('latin1', 0, 4) === 'QFI\xfb') return 'qcow2';
  if (head.toString('latin1', 0, 21) === '# Disk DescriptorFile') return 'vmdk';
  // A dynamic VHD starts with a copy of its footer; a fixed one is told by its tail (spooled).
  if (head.toString('latin1', 0, 8) === 'conectix') return 'vhd';
  return 'raw';
}

function tooSmall(disk: OvfDisk, href: string, imageBytes: number): FdError {
  return new FdError(
    'FD_OVF_CAPACITY_TOO_SMALL',
    `Disk ${disk.diskId}: ovf:capacity ${disk.capacityBytes} (${formatSize(disk.capacityBytes!)}) is smaller than the ${imageBytes}-byte (${formatSize(imageBytes)}) image in ${href}`,
    { hint: 'the descriptor understates the disk; fix ovf:capacity (or its ${property}) before importing' },
  );
}

export async function importDiskToVhd(
  pf: PackageFile,
  disk: OvfDisk,
  outPath: string,
  opts: ImportDiskOptions = {},
): Promise<ImportDiskResult> {
  const href = pf.file.href;
  const warnings: string[] = [];
  const { head, all } = await peek(pf.body, 512);
  const detected = detect(head);
  const declared = disk.formatKind;
  if (
    declared !== 'unknown' &&
    !declared.startsWith(detected) &&
    !(declared === 'vmdk-sparse' && detected.startsWith('vmdk'))
  ) {
    warnings.push(`${href}: the descriptor says ${declared}, the file holds ${detected}; converted as ${detected}`);
  }
  const capacity = disk.capacityBytes;

  if (detected === 'vmdk-streamOptimized') {
    const res = await streamVmdkToVhd(all, outPath, {
      source: href,
      ...(opts.signal ? { signal: opts.signal } : {}),
      targetSizeBytes: (vmdkBytes) => {
        if (capacity === undefined) return vmdkBytes;
        if (capacity < vmdkBytes) throw tooSmall(disk, href, vmdkBytes);
        return Math.ceil(capacity / 512) * 512;
      },
    });
    return { path: res.path, sizeBytes: res.vhdSizeBytes, detected, streamed: true, warnings };
  }

  // Not streamable: spool once, then let the disk layer convert the file.
  const spool = join(opts.workDir ?? dirname(outPath), basename(tempPathFor(outPath)) + '.spool');
  try {
    await pipeline(Readable.from(all), createWriteStream(spool, { flags: 'wx', mode: 0o600 }));
    // The converters follow what an image names (extents, backing files, parents): refuse those.
    await assertSelfContained(spool, href);
    const res = await convertDisk(spool, outPath, { to: 'vhd', ...(opts.signal ? { signal: opts.signal } : {}) });
    if (capacity !== undefined && capacity < res.sizeBytes) {
      await rm(outPath, { force: true });
      throw tooSmall(disk, href, res.sizeBytes);
    }
    let sizeBytes = res.sizeBytes;
    if (capacity !== undefined && capacity > sizeBytes) {
      try {
        sizeBytes = (await resizeVhd(outPath, Math.ceil(capacity / 512) * 512)).sizeBytes;
      } catch (err) {
        await rm(outPath, { force: true });
        throw err;
      }
    }
    return { path: outPath, sizeBytes, detected, streamed: false, warnings };
  } finally {
    await rm(spool, { force: true });
  }
}
