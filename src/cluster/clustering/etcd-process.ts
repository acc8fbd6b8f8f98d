/**
 * The private one-member etcd of a single host (the embedded default). It runs detached with a
 * pidfile under the data dir, so a daemon that is SIGKILLed and restarted finds its etcd still
 * running and reuses it, exactly as it reattaches to QEMU. Listens on loopback only; the ports
 * are chosen once and kept in the data dir so restarts keep the same URLs.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { FdError, isErrno } from '../../core/errors.js';
import { writeFileAtomic } from '../../core/atomic-file.js';
import { pidAlive, sleep } from '../../core/process.js';
import type { Logger } from '../../core/log.js';

export interface EmbeddedEtcd {
  clientUrl: string;
  pid: number;
  /** True when this call started etcd, false when it found one running. */
  started: boolean;
}

interface EtcdPorts {
  client: number;
  peer: number;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function loadPorts(dir: string): Promise<EtcdPorts> {
  const file = join(dir, 'ports.json');
  try {
    return JSON.parse(await readFile(file, 'utf8')) as EtcdPorts;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  const ports = { client: await freePort(), peer: await freePort() };
  await writeFileAtomic(file, JSON.stringify(ports) + '\n');
  return ports;
}

/**
 * How this host's etcd member is configured. A single host uses the defaults (member
 * "flightdeck", loopback only, a new cluster); `cluster init` adds an advertised address, and
 * `cluster join` writes the initial cluster it was given and state "existing".
 */
export interface MemberConfig {
  name: string;
  advertise?: string;
  initialCluster?: string;
  state: 'new' | 'existing';
}

export async function loadMemberConfig(dir: string): Promise<MemberConfig> {
  try {
    return {
      state: 'new',
      name: 'flightdeck',
      ...(JSON.parse(await readFile(join(dir, 'member.json'), 'utf8')) as Partial<MemberConfig>),
    };
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
    return { name: 'flightdeck', state: 'new' };
  }
}

export async function saveMemberConfig(dataDir: string, cfg: MemberConfig): Promise<void> {
  await mkdir(join(dataDir, 'etcd'), { recursive: true, mode: 0o700 });
  await writeFileAtomic(join(dataDir, 'etcd', 'member.json'), JSON.stringify(cfg, null, 2) + '\n');
}

/** The ports of this data dir's etcd (chosen on first use, then kept). */
export async function memberPorts(dataDir: string): Promise<{ client: number; peer: number }> {
  await mkdir(join(dataDir, 'etcd'), { recursive: true, mode: 0o700 });
  return loadPorts(join(dataDir, 'etcd'));
}

export async function etcdHealthy(clientUrl: string, timeoutMs = 1000): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return false;
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    // Any failure to reach it means "not healthy yet": the caller waits or starts one.
    return false;
  }
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(file, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

async function isEtcdPid(pid: number): Promise<boolean> {
  if (!pidAlive(pid)) return false;
  try {
    const comm = (await readFile(`/proc/${pid}/comm`, 'utf8')).trim();
    return comm === 'etcd';
  } catch {
    return false;
  }
}

export async function ensureEmbeddedEtcd(dataDir: string, log: Logger): Promise<EmbeddedEtcd> {
  const dir = join(dataDir, 'etcd');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ports = await loadPorts(dir);
  const clientUrl = `http://127.0.0.1:${ports.client}`;
  const cfg = await loadMemberConfig(dir);
  // A cluster member also listens on its advertised address; loopback stays for the daemon.
  const peerUrl = `http://${cfg.advertise ?? '127.0.0.1'}:${ports.peer}`;
  const clientUrls = cfg.advertise ? [clientUrl, `http://${cfg.advertise}:${ports.client}`] : [clientUrl];
  const pidFile = join(dir, 'etcd.pid');
  const existing = await readPid(pidFile);
  if (existing && (await isEtcdPid(existing))) {
    for (let i = 0; i < 50; i++) {
      if (await etcdHealthy(clientUrl)) return { clientUrl, pid: existing, started: false };
      await sleep(100);
    }
    log.warn('embedded etcd is running but unhealthy; restarting it', { pid: existing });
    process.kill(existing, 'SIGTERM');
    await sleep(500);
  }
  const logFh = await open(join(dir, 'etcd.log'), 'a');
  const child = spawn(
    'etcd',
    [
      `--name=${cfg.name}`,
      `--data-dir=${join(dir, 'data')}`,
      `--listen-client-urls=${clientUrls.join(',')}`,
      `--advertise-client-urls=${clientUrls[clientUrls.length - 1]}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${cfg.initialCluster ?? `${cfg.name}=${peerUrl}`}`,
      `--initial-cluster-state=${cfg.state}`,
      '--auto-compaction-mode=periodic',
      '--auto-compaction-retention=1h',
      '--quota-backend-bytes=2147483648',
      // A member back from a partition must not depose a healthy leader (etcd 3.4 defaults to
      // false): the election it forces stalls lease renewals, and fence keepers fence.
      '--pre-vote=true',
      '--log-level=warn',
      '--logger=zap',
    ],
    { detached: true, stdio: ['ignore', logFh.fd, logFh.fd] },
  );
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) =>
      reject(
        isErrno(err, 'ENOENT')
          ? new FdError('FD_ETCD_MISSING', 'etcd is not installed', {
              hint: 'run scripts/setup.sh (Debian package etcd-server)',
            })
          : err,
      ),
    );
  });
  child.unref();
  await logFh.close();
  const pid = child.pid!;
  await writeFileAtomic(pidFile, `${pid}\n`);
  for (let i = 0; i < 200; i++) {
    if (await etcdHealthy(clientUrl)) {
      log.info('embedded etcd started', { pid, clientUrl });
      return { clientUrl, pid, started: true };
    }
    if (!pidAlive(pid)) break;
    await sleep(100);
  }
  const tailText = (await readFile(join(dir, 'etcd.log'), 'utf8').catch(() => '')).split('\n').slice(-5).join('\n');
  throw new FdError('FD_ETCD_START_FAILED', `embedded etcd did not become healthy: ${tailText}`, {
    hint: `see ${join(dir, 'etcd.log')}`,
  });
}

export async function stopEmbeddedEtcd(dataDir: string): Promise<void> {
  const pid = await readPid(join(dataDir, 'etcd', 'etcd.pid'));
  if (!pid || !(await isEtcdPid(pid))) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && pidAlive(pid); i++) await sleep(50);
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
}
