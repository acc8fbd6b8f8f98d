/**
 * `flightdeck serve`: composes the daemon of one host. Embedded etcd (or the given cluster),
 * the store, tokens, tasks, the host agent with its runtime, and the HTTP server. Stateless
 * apart from the store and the data dir: it can be SIGKILLed and restarted at any time; VMs,
 * their vdisk processes and the embedded etcd keep running and are taken over again.
 */
import { cleanupViews, scanStateDir } from '../host/scan/view.js';
import { mkdir, readFile, chmod, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';
import { writeFileAtomic } from '../core/atomic-file.js';
import { createLogger, type Logger } from '../core/log.js';
import { pidAlive, sleep } from '../core/process.js';
import { ensureEmbeddedEtcd, etcdHealthy, stopEmbeddedEtcd } from '../cluster/clustering/etcd-process.js';
import { Store } from '../cluster/state/store.js';
import { TokenService } from '../cluster/state/tokens.js';
import { TaskManager } from '../cluster/state/tasks.js';
import { State } from '../cluster/state/state.js';
import { PeerClient } from '../cluster/peer/client.js';
import { HostAgent } from '../cluster/agent/host-agent.js';
import { createLocalRuntime } from '../cluster/runtime/local.js';
import { Provisioner } from '../cluster/provisioning/provisioner.js';
import { createServer } from './server.js';
import { repairDataDir, usePrivateUmask } from '../host/private-files.js';
import { loadHostConfig } from '../host/host-config.js';
import { AuditLog } from '../cluster/state/audit.js';
import { LeaderElection } from '../cluster/clustering/leader.js';
import { FailoverController } from '../cluster/clustering/failover.js';
import { localFirst } from '../cluster/clustering/endpoints.js';
import { loadClusterConfig } from '../cluster/clustering/membership.js';
import { ensureSelfSignedCert } from './tls.js';
import type { Services } from './services.js';
import { MetricsHistory } from './metrics-history.js';

export const VERSION = '0.1.0';
export const DEFAULT_PORT = 8420;

export interface DaemonOptions {
  dataDir: string;
  /** host:port; loopback by default. */
  listen?: string;
  /** Existing etcd endpoints; without them a private one-member etcd runs under the data dir. */
  etcd?: string[];
  hostName?: string;
  /** The default network of a new installation (nat: a bridge with DHCP; user: QEMU's slirp). */
  defaultNetwork?: 'nat' | 'user';
  log?: Logger;
}

export interface Daemon {
  url: string;
  port: number;
  svc: Services;
  close(opts?: { stopEtcd?: boolean }): Promise<void>;
}

function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen);
  if (!m)
    throw new FdError('FD_BAD_LISTEN', `"${listen}" is not host:port`, { hint: 'e.g. 127.0.0.1:8420 or 0.0.0.0:8420' });
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

const isLoopback = (host: string): boolean => host === 'localhost' || host.startsWith('127.') || host === '::1';

async function claimDataDir(dataDir: string): Promise<void> {
  const pidFile = join(dataDir, 'daemon.pid');
  try {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    if (pid && pid !== process.pid && pidAlive(pid)) {
      const comm = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      if (comm.includes('serve')) {
        throw new FdError('FD_DAEMON_RUNNING', `a daemon (pid ${pid}) already serves ${dataDir}`, {
          hint: 'stop it first, or use another --data-dir',
          status: 409,
        });
      }
    }
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  await writeFileAtomic(pidFile, `${process.pid}\n`);
}

async function ensureLocalToken(dataDir: string, tokens: TokenService): Promise<void> {
  const file = join(dataDir, 'token');
  try {
    const existing = (await readFile(file, 'utf8')).trim();
    if (await tokens.verify(existing)) return;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  const { token } = await tokens.create('local-admin', 'admin');
  await writeFileAtomic(file, token + '\n', { mode: 0o600 });
  await chmod(file, 0o600);
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const log = opts.log ?? createLogger({ json: true, base: { svc: 'flightdeck' } });
  const dataDir = opts.dataDir;
  // Everything this daemon and its children create is private; what is there already is repaired.
  usePrivateUmask();
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await claimDataDir(dataDir);
  for (const dir of ['import', 'export']) await mkdir(join(dataDir, dir), { recursive: true, mode: 0o700 });
  const hostConfig = await loadHostConfig(dataDir);
  const asRoot = process.getuid?.() === 0;
  const repaired = await repairDataDir(dataDir, asRoot ? { vmGroup: hostConfig.vmUsers.first } : {});
  if (repaired.changed.length)
    log.warn('made files under the data dir private', {
      count: repaired.changed.length,
      first: repaired.changed.slice(0, 10).map((c) => `${c.path} ${c.from.toString(8)} -> ${c.to.toString(8)}`),
    });
  // mounts, loop devices and processes of scans a killed daemon left behind
  await cleanupViews(scanStateDir(dataDir));
  // cluster.json (written by cluster init/join) supplies what the command line leaves out.
  const cluster = await loadClusterConfig(dataDir);
  const { host: listenHost, port } = parseListen(opts.listen ?? cluster?.listen ?? `127.0.0.1:${DEFAULT_PORT}`);
  const hostName = opts.hostName ?? cluster?.hostName ?? hostname();

  // This host runs an etcd member unless it was pointed at an etcd, or joined as a client only.
  const embedded = !opts.etcd?.length && (!cluster || existsSync(join(dataDir, 'etcd', 'member.json')));
  const local = embedded ? (await ensureEmbeddedEtcd(dataDir, log)).clientUrl : undefined;
  const endpoints = opts.etcd?.length ? opts.etcd : [...new Set([...(local ? [local] : []), ...(cluster?.etcd ?? [])])];
  // This host's own member when it runs one (see cluster/endpoints.ts).
  const storeEndpoints = local ? [local] : localFirst(endpoints, listenHost);
  const store = new Store(storeEndpoints);
  const tokens = new TokenService(store);
  await tokens.init();
  await ensureLocalToken(dataDir, tokens);

  const state = await State.open(store, log);
  const runtime = await createLocalRuntime({ dataDir, log, catalog: state.catalog, vmUsers: hostConfig.vmUsers });
  const provisioner = new Provisioner({
    state,
    dataDir,
    log,
    hostName,
    defaultNetwork: opts.defaultNetwork ?? 'nat',
  });
  const tls = isLoopback(listenHost) ? undefined : await ensureSelfSignedCert(dataDir, listenHost);
  const url = `${tls ? 'https' : 'http'}://${listenHost.includes(':') ? `[${listenHost}]` : listenHost}:${port}`;
  const leader = new LeaderElection(store, hostName, log);
  // Calls to other hosts carry this daemon's own token (tokens live in etcd: valid everywhere).
  const peers = new PeerClient({
    token: (await readFile(join(dataDir, 'token'), 'utf8')).trim(),
    host: async (name) => state.hosts.record(name),
  });
  const agent = new HostAgent({
    state,
    runtime: runtime.runtime,
    provisioner,
    peers,
    hostName,
    apiUrl: url,
    accel: runtime.accel,
    version: VERSION,
    ...(tls ? { certPem: tls.cert } : {}),
    log,
    dataDir,
    etcdEndpoints: storeEndpoints,
  });
  // The leader runs failover; a new leader picks up whatever the old one left (it is idempotent).
  const failover = new FailoverController({ state, peers, log: log.child({ part: 'failover' }) });
  leader.on('elected', () => failover.start());
  leader.on('lost', () => failover.stop());
  const tasks = new TaskManager(store, hostName, log);
  await tasks.init();
  const history = new MetricsHistory(() => agent.stats(), log.child({ part: 'metrics' }));
  const audit = new AuditLog(store, hostName, log.child({ part: 'audit' }));
  audit.start();
  const svc: Services = {
    hostName,
    dataDir,
    apiPort: port,
    version: VERSION,
    store,
    state,
    vms: state.vms,
    hosts: state.hosts,
    catalog: state.catalog,
    tasks,
    tokens,
    agent,
    provisioner,
    runtime: runtime.runtime,
    peers,
    leader,
    history,
    audit,
    log,
  };
  const app = await createServer(svc, tls ? { tls } : {});
  await app.listen({ host: listenHost, port });
  const actualPort = (app.server.address() as { port: number }).port;
  const finalUrl = url.replace(/:\d+$/, `:${actualPort}`);
  svc.apiPort = actualPort;
  agent.setApiUrl(finalUrl);
  await agent.init();
  leader.start();
  history.start();
  await writeFileAtomic(
    join(dataDir, 'daemon.json'),
    JSON.stringify(
      { url: finalUrl, pid: process.pid, host: hostName, ...(tls ? { certPath: tls.certPath } : {}) },
      null,
      2,
    ) + '\n',
  );
  log.info('flightdeck serving', { url: finalUrl, dataDir, etcd: endpoints, host: hostName });

  // Supervise the embedded etcd: if it dies, start it again on the same data and ports.
  let supervising = embedded;
  const supervise = (async () => {
    while (supervising) {
      await sleep(2000);
      if (supervising && !(await etcdHealthy(local!, 1500))) {
        log.warn('embedded etcd is not healthy; ensuring it runs');
        await ensureEmbeddedEtcd(dataDir, log).catch((err: unknown) =>
          log.error('etcd restart failed', { err: String(err) }),
        );
      }
    }
  })();

  return {
    url: finalUrl,
    port: actualPort,
    svc,
    async close(closeOpts = {}) {
      supervising = false;
      failover.stop();
      audit.stop();
      await history.stop();
      await leader.stop();
      await app.close();
      await tasks.drain();
      await agent.close();
      await tokens.close();
      await state.close();
      store.close();
      await supervise;
      await rm(join(dataDir, 'daemon.pid'), { force: true });
      if (embedded && closeOpts.stopEtcd) await stopEmbeddedEtcd(dataDir);
    },
  };
}
