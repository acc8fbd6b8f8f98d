/**
 * Process identity that survives our own restarts: a pid plus the kernel's start time for it,
 * so a recycled pid is never mistaken for our QEMU or vdisk. Zombies count as dead: when the
 * runner that spawned a process is gone, nobody may reap it, yet kill(pid, 0) still succeeds.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { isErrno } from '../core/errors.js';
import { sleep } from '../core/process.js';

export interface ProcIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: clock ticks since boot when the process started. */
  startTicks: number;
}

interface ProcStat {
  state: string;
  startTicks: number;
}

function parseStat(text: string): ProcStat {
  // comm (field 2) may hold spaces and parens: split after its closing paren
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: rest[0]!, startTicks: Number(rest[19]) };
}

function readStatSync(pid: number): ProcStat | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return undefined;
    throw err;
  }
}

/** The identity of a live process, or undefined when it does not exist (or is a zombie). */
export function identify(pid: number): ProcIdentity | undefined {
  const st = readStatSync(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return undefined;
  return { pid, startTicks: st.startTicks };
}

/** True while the very process we recorded runs (same pid and start time, not a zombie). */
export function isRunning(id: ProcIdentity): boolean {
  const st = readStatSync(id.pid);
  return !!st && st.state !== 'Z' && st.state !== 'X' && st.startTicks === id.startTicks;
}

/** Reads a pidfile QEMU wrote; undefined when missing or empty (QEMU not far enough yet). */
export async function readPidfile(path: string): Promise<number | undefined> {
  try {
    const n = parseInt((await readFile(path, 'utf8')).trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** Sends a signal to the recorded process only if it is still that process. */
export function signalIdentity(id: ProcIdentity, signal: NodeJS.Signals): boolean {
  if (!isRunning(id)) return false;
  try {
    process.kill(id.pid, signal);
    return true;
  } catch (err) {
    if (isErrno(err, 'ESRCH')) return false;
    throw err;
  }
}

/** Waits until the process is gone; true if it went within the timeout. */
export async function waitGone(id: ProcIdentity, timeoutMs: number, intervalMs = 25): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(id)) {
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
  return true;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function terminate(id: ProcIdentity, graceMs: number): Promise<void> {
  if (!signalIdentity(id, 'SIGTERM')) return;
  if (await waitGone(id, graceMs)) return;
  signalIdentity(id, 'SIGKILL');
  await waitGone(id, 5000);
}
