/**
 * Refusing to restructure an image another process has open. compact and resize-by-rewrite
 * rename a new file over the old one, and merge rewrites a parent: a vdisk server or QEMU still
 * writing to the old file would lose those writes. Node has no flock/OFD locks, so on Linux we
 * look for the file's inode among every process's open descriptors (/proc/PID/fd).
 */
import { readdir, stat } from 'node:fs/promises';
import { isErrno } from '../../core/errors.js';
import { vhdError } from './errors.js';

export async function openersOf(path: string): Promise<number[]> {
  const target = await stat(path);
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return []; // not Linux: nothing we can see
    throw err;
  }
  const found: number[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch {
        return; // gone, or not ours to see
      }
      for (const fd of fds) {
        try {
          const st = await stat(`/proc/${pid}/fd/${fd}`);
          if (st.ino === target.ino && st.dev === target.dev) {
            found.push(Number(pid));
            return;
          }
        } catch {
          // closed meanwhile, or a socket/pipe we cannot stat
        }
      }
    }),
  );
  return found.sort((a, b) => a - b);
}

export async function assertNotInUse(path: string, what: string): Promise<void> {
  const pids = await openersOf(path);
  if (pids.length) {
    throw vhdError(
      'FD_DISK_BUSY',
      `${path} is open in process ${pids.join(', ')}; ${what} needs it closed`,
      'stop the VM or vdisk server using it, then retry',
    );
  }
}
