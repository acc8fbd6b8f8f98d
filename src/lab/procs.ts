/**
 * Processes of lab hosts. Each host's processes are found by its network namespace (`ip netns
 * pids`): the daemon and etcd member are started in it, and QEMU, vdisk and dnsmasq inherit it
 * from the daemon, so nothing a host runs escapes a kill, a freeze or `lab down`. Long-lived
 * processes are started detached with a log file and a pidfile, so they outlive the `lab up`
 * that started them.
 */
import { spawn } from 'node:child_process';
import { open, readFile, readdir } from 'node:fs/promises';
import { FdError, isErrno } from '../core/errors.js';
import { writeFileAtomic } from '../core/atomic-file.js';
import { run, sleep } from '../core/process.js';

export async function netnsPids(netns: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', netns], { allowFail: true });
  if (r.code !== 0) return [];
  return r.stdout
    .split('\n')
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

/** Pids whose command line mentions `text` (a lab's data dir): catches anything that left its namespace. */
export async function pidsMentioning(text: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(text) && !exited(await procState(Number(name)))) out.push(Number(name));
  }
  return out;
}

/** The state letter from /proc/PID/stat (R, S, D, T, Z, ...), or undefined when there is no such process. */
async function procState(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ESRCH')) return undefined;
    throw err;
  }
}

const exited = (state: string | undefined): boolean => state === undefined || state === 'Z' || state === 'X';

/** True while the process exists and has not exited (a zombie waiting for its parent counts as gone). */
export async function running(pid: number): Promise<boolean> {
  return !exited(await procState(pid));
}

export async function stopped(pid: number): Promise<boolean> {
  const s = await procState(pid);
  return s === 'T' || s === 't';
}

export function signal(pids: number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) throw err;
    }
  }
}

/** Waits until every pid has exited; returns the ones still there at the deadline. */
export async function waitExited(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids;
  for (;;) {
    const states = await Promise.all(left.map(running));
    left = left.filter((_, i) => states[i]);
    if (left.length === 0 || Date.now() > deadline) return left;
    await sleep(50);
  }
}

/** SIGKILLs every process in the namespace, and whatever it forks meanwhile, until none is left. */
export async function killNetns(netns: string, timeoutMs = 10_000): Promise<number[]> {
  const killed = new Set<number>();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = await netnsPids(netns);
    const live = (await Promise.all(pids.map(async (p) => ((await running(p)) ? p : -1)))).filter((p) => p > 0);
    if (live.length === 0) return [...killed];
    signal(live, 'SIGKILL');
    for (const p of live) killed.add(p);
    await waitExited(live, Math.max(0, deadline - Date.now()));
    if (Date.now() > deadline) {
      throw new FdError('FD_LAB_KILL_FAILED', `processes ${live.join(', ')} in ${netns} did not exit after SIGKILL`, {
        hint: 'a process stuck in the kernel (state D) cannot be killed; check /proc/PID/stack',
      });
    }
  }
}

export async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** The pid in `file` when that process runs and its command line contains `mark`. */
export async function livePid(file: string, mark: string): Promise<number | undefined> {
  const pid = await readPid(file);
  if (pid === undefined || !(await running(pid))) return undefined;
  const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmd.includes(mark) ? pid : undefined;
}

/** A host that sees only its own data dir under the lab dir, as a real host sees only its disks. */
export interface PrivateDirs {
  labDir: string;
  own: string;
}

// In the mount namespace `ip netns exec` makes for the command (slave to the root one, so
// nothing leaks back): hide the lab dir under a tmpfs, then bind the host's own dir back
// through a descriptor opened before (-c: the kernel follows /proc/self/fd, not a path).
const HIDE_OTHERS =
  'exec 3<"$1" && mount -t tmpfs -o mode=0755,size=1m fdlab "$2" && mkdir -p "$1" && ' +
  'mount -c --bind /proc/self/fd/3 "$1" && exec 3<&- && shift 2 && exec "$@"';

/** `ip` arguments that run `argv` inside `netns` (with only its own data dir when `dirs` is given). */
export function inNetns(netns: string, argv: string[], dirs?: PrivateDirs): string[] {
  return dirs
    ? ['netns', 'exec', netns, 'sh', '-c', HIDE_OTHERS, 'sh', dirs.own, dirs.labDir, ...argv]
    : ['netns', 'exec', netns, ...argv];
}

export interface DetachedSpec {
  netns: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  logFile: string;
  pidFile: string;
  privateDirs?: PrivateDirs | undefined;
}

/**
 * Starts `argv` inside `netns`, detached from us, its output appended to `logFile`. `ip netns
 * exec` (and the shell that hides other hosts' dirs) exec the command in place, so the pid we
 * get is the command's own.
 */
export async function spawnDetached(spec: DetachedSpec): Promise<number> {
  const log = await open(spec.logFile, 'a');
  try {
    const child = spawn('ip', inNetns(spec.netns, spec.argv, spec.privateDirs), {
      detached: true,
      stdio: ['ignore', log.fd, log.fd],
      env: spec.env,
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    child.unref();
    await writeFileAtomic(spec.pidFile, `${child.pid}\n`);
    return child.pid!;
  } finally {
    await log.close();
  }
}

export async function logTail(file: string, lines = 12): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
