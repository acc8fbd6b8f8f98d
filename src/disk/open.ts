/**
 * Opening any disk file by what it holds, not by its name: VHD (footer cookie at the end, or at
 * 0 after a crash), qcow2 and VMDK (recognized so tools can say what they are; the data path
 * serves only VHD and raw), and raw for everything else.
 */
import { open as openFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { isErrno } from '../core/errors.js';
import type { BlockDevice } from './block-device.js';
import { RawImage } from './raw.js';
import { vhdError } from './vhd/errors.js';
import { FOOTER_SIZE, hasFooterCookie } from './vhd/footer.js';
import { VhdImage, type VhdOpenOptions } from './vhd/image.js';

export type DiskFormat = 'vhd' | 'raw' | 'qcow2' | 'vmdk';

export async function probeFormat(path: string): Promise<DiskFormat> {
  const abs = resolve(path);
  let fh;
  try {
    fh = await openFile(abs, 'r');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw vhdError('FD_DISK_NOT_FOUND', `${abs} does not exist`, 'check the path', err);
    if (isErrno(err, 'EISDIR')) throw vhdError('FD_DISK_BAD_FORMAT', `${abs} is a directory, not a disk image`);
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw vhdError('FD_DISK_BAD_FORMAT', `${abs} is not a regular file`);
    const head = Buffer.alloc(FOOTER_SIZE);
    await fh.read(head, 0, FOOTER_SIZE, 0);
    if (head.toString('latin1', 0, 4) === 'QFI\xfb') return 'qcow2';
    if (head.toString('latin1', 0, 4) === 'KDMV' || head.toString('latin1', 0, 21) === '# Disk DescriptorFile')
      return 'vmdk';
    if (st.size >= FOOTER_SIZE) {
      const tail = Buffer.alloc(FOOTER_SIZE);
      await fh.read(tail, 0, FOOTER_SIZE, st.size - FOOTER_SIZE);
      if (hasFooterCookie(tail)) return 'vhd';
    }
    // A dynamic VHD whose trailing footer was lost in a crash still starts with its copy.
    if (hasFooterCookie(head)) {
      const hdr = Buffer.alloc(8);
      await fh.read(hdr, 0, 8, 512);
      if (hdr.toString('latin1') === 'cxsparse') return 'vhd';
    }
    return 'raw';
  } finally {
    await fh.close();
  }
}

export interface OpenDiskOptions extends VhdOpenOptions {
  /** Force a format instead of probing. */
  format?: 'vhd' | 'raw';
  /** Raw, read-only: learn the file's holes so blockStatus reports them (see RawImage). */
  mapHoles?: boolean;
}

/** Opens a VHD chain or a raw file as a BlockDevice. qcow2/VMDK are refused with FD_DISK_BAD_FORMAT. */
export async function openDisk(path: string, opts: OpenDiskOptions = {}): Promise<BlockDevice & { path: string }> {
  const format = opts.format ?? (await probeFormat(path));
  if (format === 'vhd') return VhdImage.open(path, opts);
  if (format === 'raw') return RawImage.open(path, opts);
  throw vhdError(
    'FD_DISK_BAD_FORMAT',
    `${resolve(path)} is a ${format} image; flightdeck serves VHD and raw disks`,
    `convert it first: flightdeck disk convert ${path} OUT.vhd --to vhd`,
  );
}
