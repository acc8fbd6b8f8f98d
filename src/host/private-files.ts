/**
 * Nothing under the data dir is readable by other local users: it holds guest disks, serial
 * logs, cloud-init seeds (passwords), the admin token and keys. The daemon runs with a umask
 * of 077, which its children (QEMU, vdisk, etcd, dnsmasq, the fence keeper) inherit, so what
 * they create is private from the start; and at every start a repair pass takes group and
 * other permissions off everything already there (older versions, files copied in by hand).
 *
 * The exceptions are the path QEMU takes to its own run dir after dropping root: the data dir
 * and `run/` keep the search bit (x, never r or w) for the user QEMU runs as; `run/ID/` is that
 * user's, 0700.
 */
import { chmod, copyFile, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from '../core/errors.js';

export const PRIVATE_UMASK = 0o077;
/** Search-only for everyone else: QEMU's way through to its run dir (see the module comment). */
export const TRAVERSE_ONLY_DIR_MODE = 0o711;

export interface RepairReport {
  /** Paths whose mode was changed, with the old and new mode. */
  changed: { path: string; from: number; to: number }[];
}

/** Sets the process umask so that every file the daemon and its children create is private. */
export function usePrivateUmask(): void {
  process.umask(PRIVATE_UMASK);
}

/**
 * Takes group and other bits off every file and directory under `dataDir` (not following links,
 * not crossing into other filesystems: a disk mounted under it is not ours to change), and
 * gives the directories on QEMU's path exactly TRAVERSE_ONLY_DIR_MODE.
 */
export async function repairDataDir(dataDir: string): Promise<RepairReport> {
  const report: RepairReport = { changed: [] };
  const root = await lstat(dataDir);
  const traverse = new Set([dataDir, join(dataDir, 'run')]);
  const fix = async (path: string, mode: number, want: number): Promise<void> => {
    if ((mode & 0o7777) === want) return;
    try {
      await chmod(path, want);
      report.changed.push({ path, from: mode & 0o7777, to: want });
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err; // gone meanwhile (a VM stopping)
    }
  };
  const walk = async (dir: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return;
      throw err;
    }
    for (const name of names) {
      const path = join(dir, name);
      const st = await lstat(path).catch((err: unknown) => {
        if (isErrno(err, 'ENOENT')) return undefined;
        throw err;
      });
      if (!st || st.isSymbolicLink() || st.dev !== root.dev) continue;
      // A VM's run dir belongs to the user its QEMU runs as; one still owned by root is from a
      // version whose QEMU reached its sockets through it (search bit kept for it).
      const legacyRunDir = dir === join(dataDir, 'run') && st.isDirectory() && st.uid === 0;
      if (traverse.has(path) || legacyRunDir) await fix(path, st.mode, TRAVERSE_ONLY_DIR_MODE);
      else await fix(path, st.mode, st.mode & 0o700); // also drops setuid/setgid bits
      if (st.isDirectory()) await walk(path);
    }
  };
  await fix(dataDir, root.mode, TRAVERSE_ONLY_DIR_MODE);
  await walk(dataDir);
  return report;
}

/** copyFile keeps the source's mode (0644 for a package's files); a copy under the data dir is private. */
export async function copyPrivate(from: string, to: string): Promise<void> {
  await copyFile(from, to);
  await chmod(to, 0o600);
}
