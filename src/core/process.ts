/**
 * Running helper programs (qemu-img, losetup, ip, nft): every spawned process has an owner that
 * waits for it, kills it on abort and keeps its stderr for the error message.
 */
import { spawn, type SpawnOptions } from 'node:child_process';
import { FdError } from './errors.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions extends Pick<SpawnOptions, 'cwd' | 'env'> {
  input?: string | Buffer;
  signal?: AbortSignal;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      signal: opts.signal,
      timeout: opts.timeoutMs,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new FdError('FD_TOOL_MISSING', `${cmd} is not installed`, { hint: 'run scripts/setup.sh', cause: e }));
      } else reject(e);
    });
    child.on('close', (code, signal) => {
      const res = {
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
      };
      if (res.code !== 0 && !opts.allowFail) {
        reject(
          new FdError(
            'FD_TOOL_FAILED',
            `${cmd} ${args.join(' ')} failed (exit ${res.code}${signal ? `, ${signal}` : ''}): ${tail(res.stderr || res.stdout)}`,
          ),
        );
      } else resolve(res);
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

export function tail(text: string, lines = 8): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value other than undefined, or the deadline passes. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  opts: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new FdError('FD_TIMEOUT', `timed out after ${opts.timeoutMs} ms waiting for ${what}`);
    await sleep(opts.intervalMs ?? 50);
  }
}

/** True when a process with this pid exists (signal 0 probes without touching it). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
