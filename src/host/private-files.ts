/**
 * Nothing under the data dir is readable by other local users: it holds guest disks, serial
 * logs, cloud-init seeds (passwords), the admin token and keys. The daemon runs with a umask
 * of 077, which its children (QEMU, vdisk, etcd, dnsmasq, the fence keeper) inherit, so what
 * they create is private from the start; and at every start a repair pass takes group and
 * other permissions off everything already there (older versions, files copied in by hand).
 *
 * The exceptions are on the way to a VM's run dir: the data dir and `run/` are root's and the
 * VMs' shared group's (0710), so each VM's QEMU, running as its own user, gets through (and
 * nobody else); what is under `run/` the runner sets for each VM.
 */
import { chmod, chown, copyFile, lstat, readdir, readFile } from 'node:fs/promises';
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

export interface RepairOptions {
  /**
   * The VMs' shared group (host/confine): the data dir and run/ become root:GROUP 0710, the way
   * a VM's own users reach their run dirs. Without it (not root, or confinement off) they keep
   * the search bit for everyone (0711), as for QEMU dropping to `nobody`.
   */
  vmGroup?: number;
}

/**
 * Takes group and other bits off every file and directory under `dataDir` (not following links,
 * not crossing into other filesystems: a disk mounted under it is not ours to change), and
 * gives the data dir and run/ their traversal mode. What is inside run/ is the runner's: it sets
 * each VM's run dir as that VM's QEMU needs (host/runner/start.ts).
 */
export async function repairDataDir(dataDir: string, opts: RepairOptions = {}): Promise<RepairReport> {
  const report: RepairReport = { changed: [] };
  const root = await lstat(dataDir);
  const runDir = join(dataDir, 'run');
  // A VM still running from before per-VM users (QEMU as `nobody`) needs the old search bit.
  const vmGroup = (await legacyVmsRunning(runDir)) ? undefined : opts.vmGroup;
  const traverseMode = vmGroup === undefined ? TRAVERSE_ONLY_DIR_MODE : 0o710;
  const fix = async (path: string, mode: number, want: number, gid?: number): Promise<void> => {
    try {
      if (gid !== undefined && (await lstat(path)).gid !== gid) await chown(path, 0, gid);
      if ((mode & 0o7777) === want) return;
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
      if (path === runDir) {
        await fix(path, st.mode, traverseMode, vmGroup);
        continue;
      }
      await fix(path, st.mode, st.mode & 0o700); // also drops setuid/setgid bits
      if (st.isDirectory()) await walk(path);
    }
  };
  await fix(dataDir, root.mode, traverseMode, vmGroup);
  await walk(dataDir);
  return report;
}

async function legacyVmsRunning(runDir: string): Promise<boolean> {
  const names = await readdir(runDir).catch(() => [] as string[]);
  for (const n of names) {
    const text = await readFile(join(runDir, n, 'vm.json'), 'utf8').catch(() => undefined);
    if (!text) continue;
    try {
      const rec = JSON.parse(text) as { runAs?: string; confine?: unknown };
      if (rec.runAs && !rec.confine) return true;
    } catch {
      // half written: its runner is about to replace it
    }
  }
  return false;
}

/** copyFile keeps the source's mode (0644 for a package's files); a copy under the data dir is private. */
export async function copyPrivate(from: string, to: string): Promise<void> {
  await copyFile(from, to);
  await chmod(to, 0o600);
}
