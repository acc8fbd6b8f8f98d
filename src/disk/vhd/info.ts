/**
 * `disk info`: what an image is, in one JSON shape for every format. VHD and raw are read by
 * our engine; qcow2 and VMDK by `qemu-img info`, since their data path is not ours.
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { run } from '../../core/process.js';
import { probeFormat, type DiskFormat } from '../open.js';
import { UNUSED } from './bat.js';
import { usesCurrentSize } from './geometry.js';
import { VhdImage } from './image.js';

export interface DiskInfo {
  path: string;
  format: DiskFormat;
  type: 'fixed' | 'dynamic' | 'differencing';
  /** Bytes the guest sees. */
  virtualSize: number;
  /** Bytes the file takes (its length). */
  fileSize: number;
  /** Dynamic/differencing block size in bytes; null for fixed and raw. */
  blockSize: number | null;
  creatorApp: string | null;
  uuid: string | null;
  /** The resolved parent path, or null. */
  parent: string | null;
  /** This image and its ancestors, child first. */
  chain: string[];
  /** VHD only: the footer's current size, CHS geometry and which of them sizes the disk. */
  vhd?: {
    currentSize: number;
    geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
    sizeFrom: 'current-size' | 'chs';
    allocatedBlocks: number | null;
    totalBlocks: number | null;
    footerCopyUsed: boolean;
  };
}

export async function diskInfo(path: string): Promise<DiskInfo> {
  const abs = resolve(path);
  const format = await probeFormat(abs);
  const fileSize = (await stat(abs)).size;
  if (format === 'raw') {
    return {
      path: abs,
      format,
      type: 'fixed',
      virtualSize: fileSize,
      fileSize,
      blockSize: null,
      creatorApp: null,
      uuid: null,
      parent: null,
      chain: [abs],
    };
  }
  if (format === 'qcow2' || format === 'vmdk') return qemuInfo(abs, format, fileSize);
  const img = await VhdImage.open(abs);
  try {
    const f = img.footer;
    return {
      path: abs,
      format,
      type: f.diskType,
      virtualSize: img.sizeBytes,
      fileSize,
      blockSize: img.bat ? img.blockSize : null,
      creatorApp: f.creatorApp.replace(/[\0 ]+$/, ''),
      uuid: img.uuid,
      parent: img.parent?.path ?? null,
      chain: img.chainPaths,
      vhd: {
        currentSize: f.currentSize,
        geometry: f.geometry,
        sizeFrom: usesCurrentSize(f) ? 'current-size' : 'chs',
        allocatedBlocks: img.bat ? img.bat.filter((e) => e !== UNUSED).length : null,
        totalBlocks: img.bat ? img.bat.length : null,
        footerCopyUsed: img.footerSource === 'head',
      },
    };
  } finally {
    await img.close();
  }
}

interface QemuInfoJson {
  'virtual-size': number;
  'cluster-size'?: number;
  'full-backing-filename'?: string;
  'backing-filename'?: string;
}

async function qemuInfo(path: string, format: 'qcow2' | 'vmdk', fileSize: number): Promise<DiskInfo> {
  const chain = JSON.parse(
    (await run('qemu-img', ['info', '-f', format, '--backing-chain', '--output=json', path])).stdout,
  ) as QemuInfoJson[];
  const top = chain[0]!;
  const parent = top['full-backing-filename'] ?? top['backing-filename'] ?? null;
  return {
    path,
    format,
    type: parent ? 'differencing' : 'dynamic',
    virtualSize: top['virtual-size'],
    fileSize,
    blockSize: top['cluster-size'] ?? null,
    creatorApp: null,
    uuid: null,
    parent,
    chain: [path, ...chain.slice(1).map((c, i) => chain[i]!['full-backing-filename'] ?? String(c))],
  };
}
