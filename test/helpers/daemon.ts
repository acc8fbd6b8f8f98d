/**
 * A real daemon for end-to-end tests: `flightdeck serve` in a temp data dir with its own
 * private etcd on free loopback ports, driven through the real CLI. `kill()` SIGKILLs it
 * (VMs and etcd keep running, as in production); `dispose()` stops everything it started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pidAlive, sleep, waitFor } from '../../src/core/process.js';

export const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface TestDaemonOptions {
  hostName?: string;
  etcd?: string;
  /** The host's DATA_DIR/config.json (import and export directories...). */
  config?: { importDirs?: string[]; exportDirs?: string[] };
  /** The default network of the new installation: user mode (default here) or a NAT bridge. */
  defaultNetwork?: 'nat' | 'user';
}

export class TestDaemon {
  child: ChildProcess | undefined;
  url = '';
  token = '';
  log = '';

  constructor(
    readonly dataDir: string,
    readonly opts: TestDaemonOptions = {},
  ) {}

  /** A daemon with its own private etcd, or joined to `etcd` (another daemon's) as `hostName`. */
  static async start(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
    // Short path: unix sockets of VMs live under the data dir and are limited to 108 bytes.
    const d = new TestDaemon(await mkdtemp(join(tmpdir(), 'fd-e2e-')), opts);
    if (opts.config) await writeFile(join(d.dataDir, 'config.json'), JSON.stringify(opts.config));
    await d.startProcess();
    return d;
  }

  /** URL of this daemon's private etcd (for a second daemon to join). */
  async etcdUrl(): Promise<string> {
    const ports = JSON.parse(await readFile(join(this.dataDir, 'etcd', 'ports.json'), 'utf8')) as { client: number };
    return `http://127.0.0.1:${ports.client}`;
  }

  async startProcess(): Promise<void> {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--data-dir',
        this.dataDir,
        '--listen',
        '127.0.0.1:0',
        '--default-network',
        this.opts.defaultNetwork ?? 'user',
        ...(this.opts.hostName ? ['--host-name', this.opts.hostName] : []),
        ...(this.opts.etcd ? ['--etcd', this.opts.etcd] : []),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, FLIGHTDECK_ACCEL: 'tcg' },
      },
    );
    this.child = child;
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (this.log += b.toString()));
    await waitFor(
      `daemon ready line (log: ${this.log.slice(-2000)})`,
      () => {
        if (child.exitCode !== null) throw new Error(`daemon exited ${child.exitCode}: ${this.log.slice(-3000)}`);
        return out.includes('"ready":true') ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 50 },
    );
    const info = JSON.parse(await readFile(join(this.dataDir, 'daemon.json'), 'utf8')) as { url: string };
    this.url = info.url;
    this.token = (await readFile(join(this.dataDir, 'token'), 'utf8')).trim();
  }

  /** Runs the real CLI against this daemon. */
  cli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
    return new Promise((resolvePromise) => {
      const c = spawn(process.execPath, [CLI, ...args, '--data-dir', this.dataDir], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, ...opts.env },
      });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
      c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      c.on('close', (code) => resolvePromise({ code: code ?? 1, stdout, stderr }));
      c.stdin.end(opts.input ?? '');
    });
  }

  /** CLI with --json; fails the test with the CLI's output when it exits non-zero. */
  async json<T>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--json']);
    if (r.code !== 0) throw new Error(`flightdeck ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  async api(
    method: string,
    path: string,
    body?: unknown,
    token: string | null = this.token,
  ): Promise<{ status: number; body: unknown; headers: Headers }> {
    const res = await fetch(this.url + path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed, headers: res.headers };
  }

  kill(): void {
    this.child?.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null) return;
    const c = this.child;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000)]);
    if (c.exitCode === null) c.kill('SIGKILL');
  }

  /** Kills every process this daemon's data dir owns (VMs, vdisks, etcd) and removes it. */
  async dispose(): Promise<void> {
    await this.stop();
    const pids = await pidsUnder(this.dataDir);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const pid of pids)
      await waitFor('process exit', () => (pidAlive(pid) ? undefined : true), { timeoutMs: 5000 }).catch(
        () => undefined,
      );
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** Pids of processes whose command line mentions `dir` (how we find a data dir's children). */
export async function pidsUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(dir)) out.push(Number(name));
  }
  return out;
}
