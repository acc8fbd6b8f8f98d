/**
 * Which bytes of a disk were written since a baseline: the sectors a differencing VHD holds
 * itself. The baseline takes a differencing child of the VM's disk (the guest writes into the
 * child from then on), so the child's BAT and sector bitmaps are exactly "written since".
 * Ranges are byte offsets on the virtual disk, sorted and coalesced.
 */
import { bitSet } from '../../disk/vhd/bat.js';
import { VhdImage } from '../../disk/vhd/image.js';

export type Ranges = Array<[start: number, end: number]>;

const SECTOR = 512;
const UNUSED = 0xffffffff;

/** The sectors `childPath` (a differencing or dynamic VHD) holds itself, as byte ranges. */
export async function writtenRanges(childPath: string): Promise<Ranges> {
  const img = await VhdImage.open(childPath, { noParent: true });
  try {
    const out: Ranges = [];
    const bat = img.bat;
    if (!bat) return [[0, img.sizeBytes]]; // a fixed VHD: no record of what was written
    const push = (s: number, e: number) => {
      const last = out[out.length - 1];
      if (last && last[1] === s) last[1] = e;
      else out.push([s, e]);
    };
    for (let blk = 0; blk < bat.length; blk++) {
      if (bat[blk] === UNUSED) continue;
      const bm = await img.bitmap(blk);
      const base = blk * img.blockSize;
      for (let s = 0; s < img.sectorsPerBlock; s++)
        if (bitSet(bm, s)) push(base + s * SECTOR, Math.min(base + (s + 1) * SECTOR, img.sizeBytes));
    }
    return out;
  } finally {
    await img.close();
  }
}

/** True when [start, end) meets any range (binary search). */
export function overlaps(ranges: Ranges, start: number, end: number): boolean {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid]![1] <= start) lo = mid + 1;
    else hi = mid;
  }
  return lo < ranges.length && ranges[lo]![0] < end;
}
