/**
 * CHS geometry and the creator-app size rule. Virtual PC sized disks by their CHS geometry,
 * Hyper-V by the footer's current size; a reader must pick the same one the writer meant or the
 * guest sees a disk cut short (or grown). We follow QEMU 7.2 block/vpc.c exactly so that our
 * engine and `qemu-img info -f vpc` on this machine always agree:
 *
 *   current size for creator apps "win ", "qem2", "d2v ", "CTXS", "tap\0";
 *   CHS size (cylinders x heads x sectors x 512) for every other app ("vpc ", "qemu", "xo  ",
 *   "wa\0\0", "dutl", ...), except when the geometry is the maximum 65535/16/255, where the CHS
 *   size cannot hold the disk and QEMU falls back to the current size.
 *
 * (QEMU after 9.x narrowed CHS to "vpc " and "qemu" only; images we create use "win ", which
 * every version, Hyper-V and Azure size by the current size, so they read the same everywhere.)
 */
import type { Footer, Geometry } from './footer.js';

export const MAX_CHS_SECTORS = 65535 * 16 * 255;
/** QEMU's and Hyper-V's VHD ceiling: 2040 GiB. */
export const MAX_VHD_BYTES = 0xff000000 * 512;

const CURRENT_SIZE_APPS = ['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'];

export function usesCurrentSize(f: Pick<Footer, 'creatorApp' | 'geometry'>): boolean {
  if (CURRENT_SIZE_APPS.includes(f.creatorApp)) return true;
  return chsSectors(f.geometry) === MAX_CHS_SECTORS;
}

export function chsSectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

/** The size a guest sees, by the rule above. */
export function virtualSizeOf(f: Pick<Footer, 'creatorApp' | 'geometry' | 'currentSize'>): number {
  return usesCurrentSize(f) ? f.currentSize : chsSectors(f.geometry) * 512;
}

/** CHS geometry for a size, the algorithm of the VHD specification (appendix). */
export function geometryFor(sizeBytes: number): Geometry {
  let totalSectors = Math.floor(sizeBytes / 512);
  if (totalSectors > MAX_CHS_SECTORS) totalSectors = MAX_CHS_SECTORS;
  let sectorsPerTrack: number;
  let heads: number;
  let cylTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack };
}
