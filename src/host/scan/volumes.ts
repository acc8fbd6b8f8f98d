/**
 * The filesystems on a disk, found from outside: MBR or GPT partitions (mount-partitions.ts),
 * or the whole disk; LVM physical volumes opened into their logical volumes (lvm.ts); each
 * volume's filesystem named by its magic. A volume that cannot be read says why and the others
 * are still listed.
 */
import { open } from 'node:fs/promises';
import { FdError } from '../../core/errors.js';
import { readPartitions } from '../mount-partitions.js';
import { isLvmPv, readLvm } from './lvm.js';

export type FsType = 'ext' | 'xfs' | 'ntfs' | 'fat' | 'lvm' | 'swap' | 'unknown';

export interface Volume {
  /** `disk`, `p1` (partition 1), `p2/vg0/root` (LV root of VG vg0 on partition 2). */
  name: string;
  offsetBytes: number;
  sizeBytes: number;
  fsType: FsType;
  error?: { code: string; message: string };
}

type Read = (offset: number, length: number) => Promise<Buffer>;

export async function detectFs(read: Read): Promise<FsType> {
  const b = await read(0, 8192);
  if (b.readUInt16LE(1024 + 56) === 0xef53) return 'ext';
  if (b.toString('latin1', 0, 4) === 'XFSB') return 'xfs';
  if (b.toString('latin1', 3, 11) === 'NTFS    ') return 'ntfs';
  if (
    b[510] === 0x55 &&
    b[511] === 0xaa &&
    (b.toString('latin1', 54, 57) === 'FAT' || b.toString('latin1', 82, 87) === 'FAT32')
  )
    return 'fat';
  if (await isLvmPv(read)) return 'lvm';
  if (b.toString('latin1', 4086, 4096) === 'SWAPSPACE2') return 'swap';
  return 'unknown';
}

export async function listVolumes(path: string): Promise<Volume[]> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const reader =
      (base: number, limit: number): Read =>
      async (offset, length) => {
        const n = Math.max(0, Math.min(length, limit - offset));
        const buf = Buffer.alloc(length);
        if (n > 0) await fh.read(buf, 0, n, base + offset);
        return buf;
      };
    let parts: Array<{ name: string; offsetBytes: number; sizeBytes: number }>;
    try {
      const p = await readPartitions(path);
      parts = p.length
        ? p.map((x) => ({ name: `p${x.number}`, offsetBytes: x.offsetBytes, sizeBytes: x.sizeBytes }))
        : [{ name: 'disk', offsetBytes: 0, sizeBytes: size }];
    } catch (err) {
      if (!(err instanceof FdError)) throw err;
      return [
        {
          name: 'disk',
          offsetBytes: 0,
          sizeBytes: size,
          fsType: 'unknown',
          error: { code: err.code, message: err.message },
        },
      ];
    }
    const out: Volume[] = [];
    for (const p of parts) {
      const read = reader(p.offsetBytes, p.sizeBytes);
      const fsType = await detectFs(read);
      if (fsType !== 'lvm') {
        out.push({ ...p, fsType, ...(fsType === 'unknown' ? { error: unknownFs(p.name) } : {}) });
        continue;
      }
      try {
        for (const lv of await readLvm(read)) {
          const name = `${p.name}/${lv.vg}/${lv.name}`;
          if (lv.unsupported || lv.offsetBytes === undefined || lv.sizeBytes === undefined) {
            out.push({
              name,
              offsetBytes: 0,
              sizeBytes: 0,
              fsType: 'unknown',
              error: {
                code: 'FD_SCAN_LVM_UNSUPPORTED',
                message: `cannot read LV ${lv.vg}/${lv.name}: ${lv.unsupported}`,
              },
            });
            continue;
          }
          const at = p.offsetBytes + lv.offsetBytes;
          const lvType = await detectFs(reader(at, lv.sizeBytes));
          out.push({
            name,
            offsetBytes: at,
            sizeBytes: lv.sizeBytes,
            fsType: lvType,
            ...(lvType === 'unknown' ? { error: unknownFs(name) } : {}),
          });
        }
      } catch (err) {
        if (!(err instanceof FdError)) throw err;
        out.push({ ...p, fsType, error: { code: err.code, message: err.message } });
      }
    }
    return out;
  } finally {
    await fh.close();
  }
}

function unknownFs(name: string): { code: string; message: string } {
  return {
    code: 'FD_SCAN_UNKNOWN_FS',
    message: `${name}: no filesystem this host can read (ext2/3/4, XFS, NTFS, FAT) or it is damaged`,
  };
}
