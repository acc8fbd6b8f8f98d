/**
 * Finds processes by what their command line mentions. A runner killed between spawning a
 * process and recording its pid leaves an orphan only a scan can find; every QEMU and vdisk we
 * start names a path inside its VM's run dir, so the run dir path identifies them.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import { isErrno } from '../core/errors.js';
import { identify, type ProcIdentity } from './pidfile.js';

export async function findProcessesMentioning(needle: string): Promise<ProcIdentity[]> {
  const out: ProcIdentity[] = [];
  for (const ent of await readdir('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    let cmd: string;
    try {
      cmd = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH') || isErrno(err, 'EACCES')) continue;
      throw err;
    }
    if (!cmd.includes(needle)) continue;
    const id = identify(pid);
    if (id) out.push(id);
  }
  return out;
}

/** Processes that hold `path` open right now (what a vdisk or QEMU serving a disk does). */
export async function findProcessesHoldingFile(path: string): Promise<ProcIdentity[]> {
  const out: ProcIdentity[] = [];
  for (const ent of await readdir('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    let fds: string[];
    try {
      fds = await readdir(`/proc/${pid}/fd`);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH') || isErrno(err, 'EACCES')) continue;
      throw err;
    }
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (target === path) {
        const id = identify(pid);
        if (id) out.push(id);
        break;
      }
    }
  }
  return out;
}
