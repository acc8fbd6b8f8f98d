/**
 * A reproducible initramfs: a cpio "newc" archive written by us from a directory tree, with
 * entries sorted, owners 0:0, one fixed mtime and inode numbers assigned in order, so the same
 * tree gives the same bytes on any host (GNU cpio would copy inode numbers and times from the
 * host's filesystem). Device nodes (the kernel needs /dev/console before devtmpfs is mounted)
 * are added as entries; nothing is created on the host.
 */
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface CpioEntry {
  /** Path inside the archive, without a leading slash ("bin/busybox"). */
  name: string;
  /** Full st_mode: type bits and permissions. */
  mode: number;
  data?: Buffer;
  /** For character and block devices. */
  rdevMajor?: number;
  rdevMinor?: number;
}

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;

const TRAILER = 'TRAILER!!!';

/** Every file, directory and symlink under `root`, named relative to it. */
export async function entriesFromTree(root: string): Promise<CpioEntry[]> {
  const out: CpioEntry[] = [];
  async function walk(rel: string): Promise<void> {
    const abs = rel ? join(root, rel) : root;
    for (const name of (await readdir(abs)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      if (st.isDirectory()) {
        out.push({ name: r, mode: S_IFDIR | (st.mode & 0o7777) });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        out.push({ name: r, mode: S_IFLNK | 0o777, data: Buffer.from(await readlink(p)) });
      } else if (st.isFile()) {
        out.push({ name: r, mode: S_IFREG | (st.mode & 0o7777), data: await readFile(p) });
      } else {
        throw new Error(`cpio: ${p} is not a file, directory or symlink`);
      }
    }
  }
  await walk('');
  return out;
}

function header(e: CpioEntry, ino: number, mtimeS: number, fileSize: number): Buffer {
  const nameBytes = Buffer.byteLength(e.name) + 1;
  const hex = (n: number): string => n.toString(16).padStart(8, '0');
  const fields = [
    '070701',
    hex(ino),
    hex(e.mode),
    hex(0), // uid
    hex(0), // gid
    hex(1), // nlink
    hex(mtimeS),
    hex(fileSize),
    hex(0), // dev major
    hex(0), // dev minor
    hex(e.rdevMajor ?? 0),
    hex(e.rdevMinor ?? 0),
    hex(nameBytes),
    hex(0), // check
  ];
  return Buffer.from(fields.join('') + e.name + '\0', 'latin1');
}

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

/** The archive bytes; entries are sorted by name so parents precede children. */
export function writeCpio(entries: CpioEntry[], mtimeS: number): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  let ino = 1;
  for (const e of [...sorted, { name: TRAILER, mode: 0 }]) {
    const data = e.data ?? Buffer.alloc(0);
    const h = header(e, e.name === TRAILER ? 0 : ino++, e.name === TRAILER ? 0 : mtimeS, data.length);
    push(h);
    push(pad4(offset));
    if (data.length) {
      push(data);
      push(pad4(offset));
    }
  }
  return Buffer.concat(parts);
}
