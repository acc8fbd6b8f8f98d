/**
 * The `flightdeck serve` of one lab host, run inside the host's namespace against the lab's
 * etcd cluster. It listens on the host's lab IP, so it serves TLS with a certificate of its
 * own under its data dir; its admin token is in `DATA_DIR/token` (each host makes one at first
 * start, and every one of them works on every host since tokens live in the shared etcd).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdError, isErrno } from '../core/errors.js';
import { sleep } from '../core/process.js';
import { API_PORT } from './names.js';
import { tryRequestJson, type Endpoint } from './http.js';
import { livePid, logTail, running, spawnDetached, type PrivateDirs } from './procs.js';

/** The CLI entry point of this build (dist/src/cli/main.js), started by path, not imported. */
export const CLI_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));
/** The checkout's bin/ with the `flightdeck` wrapper, put on PATH for `lab exec`. */
export const REPO_BIN = fileURLToPath(new URL('../../../bin', import.meta.url));

export interface DaemonHost {
  name: string;
  netns: string;
  ip: string;
  dataDir: string;
}

export const daemonLog = (h: DaemonHost): string => join(h.dataDir, 'daemon.log');
const daemonPidFile = (h: DaemonHost): string => join(h.dataDir, 'daemon.pid');
export const apiUrlOf = (ip: string): string => `https://${ip}:${API_PORT}`;

export function daemonPid(h: DaemonHost): Promise<number | undefined> {
  return livePid(daemonPidFile(h), 'serve');
}

/** Environment for processes of a host: the caller's, minus anything pointing elsewhere. */
export function hostEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of ['FLIGHTDECK_DATA_DIR', 'FLIGHTDECK_URL', 'FLIGHTDECK_TOKEN', 'FLIGHTDECK_CA']) delete env[k];
  return { ...env, ...extra };
}

export async function startHostDaemon(
  h: DaemonHost,
  etcdEndpoints: string[],
  accel: string,
  privateDirs?: PrivateDirs,
): Promise<number> {
  const already = await daemonPid(h);
  if (already !== undefined) return already;
  return spawnDetached({
    netns: h.netns,
    argv: [
      process.execPath,
      CLI_MAIN,
      'serve',
      '--data-dir',
      h.dataDir,
      '--listen',
      `${h.ip}:${API_PORT}`,
      '--etcd',
      etcdEndpoints.join(','),
      '--host-name',
      h.name,
      '--default-network',
      'user',
    ],
    env: hostEnv({ FLIGHTDECK_ACCEL: accel }),
    logFile: daemonLog(h),
    pidFile: daemonPidFile(h),
    privateDirs,
  });
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** How to call the host's API: its URL, its certificate and its admin token (once it made them). */
export async function hostEndpoint(h: DaemonHost): Promise<Endpoint | undefined> {
  const ca = await readOptional(join(h.dataDir, 'tls', 'cert.pem'));
  const token = (await readOptional(join(h.dataDir, 'token')))?.trim();
  if (!ca || !token) return undefined;
  return { url: apiUrlOf(h.ip), ca, token };
}

/** Waits until the daemon answers its health check as this host. */
export async function waitDaemonReady(h: DaemonHost, pid: number, timeoutMs: number): Promise<Endpoint> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await running(pid))) break;
    const ep = await hostEndpoint(h);
    if (ep) {
      const res = await tryRequestJson<{ host?: string }>(ep, 'GET', '/api/v1/health', 1000);
      if (res?.status === 200 && res.body.host === h.name) return ep;
    }
    await sleep(100);
  }
  throw new FdError(
    'FD_LAB_DAEMON_FAILED',
    `flightdeck serve on ${h.name} did not become ready${(await running(pid)) ? '' : ' (it exited)'}: ${await logTail(daemonLog(h))}`,
    { hint: `see ${daemonLog(h)}` },
  );
}
