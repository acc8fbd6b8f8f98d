/**
 * The file half of an image import: a checked source (import-paths.ts) becomes an ISO copy or a
 * dynamic VHD in the images directory. The image is inspected before any converter runs and
 * refused when it names other files (disk/references.ts): the converters would follow them.
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { produceFileAtomic } from '../core/atomic-file.js';
import { Progress, type ProgressListener } from '../core/progress.js';
import { convertDisk } from '../disk/convert.js';
import { openDisk } from '../disk/open.js';
import { assertSelfContained } from '../disk/references.js';
import type { ImportSource } from './import-paths.js';
import { copyPrivate } from './private-files.js';

export interface ImportedImageFile {
  kind: 'iso' | 'disk';
  path: string;
  format: 'iso' | 'vhd';
  sizeBytes: number;
}

export interface ImageImportIo {
  log(msg: string): void;
  onProgress?: ProgressListener;
  signal?: AbortSignal;
}

async function looksLikeIso(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(5);
    const { bytesRead } = await fh.read(b, 0, 5, 0x8001);
    return bytesRead === 5 && b.toString('latin1') === 'CD001';
  } finally {
    await fh.close();
  }
}

/** Copies or converts `src` (shown to the user as `label`) to `imagesDir/NAME.iso|.vhd`. */
export async function importImageFile(
  src: ImportSource,
  label: string,
  imagesDir: string,
  name: string,
  io: ImageImportIo,
): Promise<ImportedImageFile> {
  if (await looksLikeIso(src.path)) {
    const dest = join(imagesDir, `${name}.iso`);
    io.log(`copying ISO ${label}`);
    await produceFileAtomic(dest, (tmp) => copyPrivate(src.path, tmp));
    return { kind: 'iso', path: dest, format: 'iso', sizeBytes: src.sizeBytes };
  }
  const format = await assertSelfContained(src.path, label);
  const dest = join(imagesDir, `${name}.vhd`);
  io.log(`converting ${format} image ${label} to a dynamic VHD`);
  const progress = new Progress(src.sizeBytes, io.onProgress);
  await convertDisk(src.path, dest, {
    to: 'vhd',
    onProgress: (p) => progress.report(p.done),
    ...(io.signal ? { signal: io.signal } : {}),
  });
  const dev = await openDisk(dest);
  const sizeBytes = dev.sizeBytes;
  await dev.close();
  return { kind: 'disk', path: dest, format: 'vhd', sizeBytes };
}
