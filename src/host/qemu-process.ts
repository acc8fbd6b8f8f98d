/**
 * Launching QEMU detached: its own session (our signals never reach it), stderr appended to
 * qemu.log in the run dir (the crash record's tail comes from there), no -daemonize so the
 * stderr of a failed start is still ours to read. Returns once QMP answers, or throws
 * FD_VM_START_FAILED with QEMU's own words when it exits first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { FdError, isErrno } from '../core/errors.js';
import { sleep, tail } from '../core/process.js';
import { QEMU_BINARY } from '../qemu/argv.js';
import { QmpClient } from '../qemu/qmp.js';
import { identify, isRunning, signalIdentity, waitGone, type ProcIdentity } from './pidfile.js';

const START_MARK = '--- flightdeck: qemu start ';

export interface LaunchedQemu {
  proc: ProcIdentity;
  qmp: QmpClient;
  /** Set while this runner is QEMU's parent: exit code and signal come from here. */
  child: ChildProcess;
}

export interface LaunchOptions {
  timeoutMs?: number;
  onSpawn?: (proc: ProcIdentity) => Promise<void>;
  /** Runs QEMU through this command (cgroup entry, user switch): prefix + [qemu, ...argv]. */
  wrap?: (command: string[]) => string[];
  /** Descriptors QEMU inherits as its fds 3, 4, ... (the fd sets of -add-fd). */
  fds?: number[];
}

export async function launchQemu(
  argv: string[],
  paths: { qmp: string; qemuLog: string },
  opts: LaunchOptions = {},
): Promise<LaunchedQemu> {
  const log = await open(paths.qemuLog, 'a', 0o600);
  let child: ChildProcess;
  try {
    await log.write(`${START_MARK}${new Date().toISOString()} ---\n`);
    const [cmd, ...args] = opts.wrap ? opts.wrap([QEMU_BINARY, ...argv]) : [QEMU_BINARY, ...argv];
    child = spawn(cmd!, args, { detached: true, stdio: ['ignore', log.fd, log.fd, ...(opts.fds ?? [])] });
  } finally {
    await log.close();
  }
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', () => (exited = true));
  child.unref();
  const proc = child.pid === undefined ? undefined : identify(child.pid);
  if (!proc) throw await startFailed(paths.qemuLog, 'QEMU exited at once');
  await opts.onSpawn?.(proc);
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (exited || !isRunning(proc)) throw await startFailed(paths.qemuLog, 'QEMU exited during start');
    try {
      const qmp = await QmpClient.connect(paths.qmp, { timeoutMs: 5000 });
      return { proc, qmp, child };
    } catch (err) {
      if (!(err instanceof FdError) || !err.code.startsWith('FD_QMP_')) throw err;
      // QEMU listens on QMP before it opens disks: a reset here usually means it is exiting
      if (err.code !== 'FD_QMP_CONNECT' && (await waitGone(proc, 1000)))
        throw await startFailed(paths.qemuLog, 'QEMU exited during start');
    }
    if (Date.now() > deadline) {
      signalIdentity(proc, 'SIGKILL');
      await waitGone(proc, 5000);
      throw await startFailed(paths.qemuLog, 'QMP did not answer in time');
    }
    await sleep(20);
  }
}

/** QEMU's stderr since its last start, last `lines` lines. */
export async function qemuStderrTail(logPath: string, lines = 20): Promise<string> {
  let text: string;
  try {
    text = await readFile(logPath, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return '';
    throw err;
  }
  const at = text.lastIndexOf(START_MARK);
  const since = at < 0 ? text : text.slice(text.indexOf('\n', at) + 1);
  return tail(since, lines);
}

async function startFailed(logPath: string, what: string): Promise<FdError> {
  const stderr = await qemuStderrTail(logPath, 10);
  return new FdError('FD_VM_START_FAILED', `${what}: ${stderr || '(no output)'}`, {
    hint: 'fix what QEMU reports above; nothing of the VM is left running',
    details: { stderrTail: stderr },
  });
}
