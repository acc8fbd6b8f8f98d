/**
 * The regular files under a mounted volume, without following symlinks or leaving the
 * filesystem (a guest's tree is hostile input: links may point anywhere on the host).
 */
import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from '../../core/errors.js';

export interface FileEntry {
  /** Path inside the volume, from its root: `/etc/passwd`. */
  path: string;
  sizeBytes: number;
  mode: number;
}

/** Regular files under `root` + `sub` (default: all), sorted by path; unreadable dirs are skipped. */
export async function walkFiles(root: string, sub = '/'): Promise<FileEntry[]> {
  const out: FileEntry[] = [];
  const top = await lstat(join(root, sub)).catch(() => null);
  if (!top) return out;
  const dev = top.dev;
  if (top.isFile()) return [{ path: sub, sizeBytes: top.size, mode: top.mode }];
  const stack = [sub === '/' ? '' : sub.replace(/\/$/, '')];
  while (stack.length) {
    const rel = stack.pop()!;
    let dir;
    try {
      dir = await opendir(join(root, rel) || '/');
    } catch (err) {
      if (isErrno(err, 'EACCES') || isErrno(err, 'ENOENT') || isErrno(err, 'EIO')) continue;
      throw err;
    }
    for await (const d of dir) {
      const p = `${rel}/${d.name}`;
      if (d.isDirectory()) {
        const st = await lstat(join(root, p)).catch(() => null);
        if (st && st.dev === dev) stack.push(p);
      } else if (d.isFile()) {
        const st = await lstat(join(root, p)).catch(() => null);
        if (st) out.push({ path: p, sizeBytes: st.size, mode: st.mode });
      }
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
