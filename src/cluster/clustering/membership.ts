/**
 * Growing from one host to a cluster is an etcd membership change, not a data move.
 * `initCluster` makes this host's private etcd member reachable on its advertised address;
 * `addMember` (run by any member when a host joins) adds an etcd member for the first
 * MAX_MEMBERS hosts and returns what the new host needs to start its member, or only the client
 * endpoints once the cluster has enough members. `cluster.json` in the data dir records what
 * `flightdeck serve` uses on its next start (etcd endpoints, listen address, host name).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError, isErrno } from '../../core/errors.js';
import { writeFileAtomic } from '../../core/atomic-file.js';
import type { Logger } from '../../core/log.js';
import {
  ensureEmbeddedEtcd,
  loadMemberConfig,
  memberPorts,
  saveMemberConfig,
  stopEmbeddedEtcd,
} from './etcd-process.js';
import type { Store } from '../state/store.js';

export const MAX_MEMBERS = 3;

export interface ClusterConfig {
  etcd: string[];
  listen?: string;
  hostName?: string;
}

export async function loadClusterConfig(dataDir: string): Promise<ClusterConfig | undefined> {
  try {
    return JSON.parse(await readFile(join(dataDir, 'cluster.json'), 'utf8')) as ClusterConfig;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

export async function saveClusterConfig(dataDir: string, cfg: ClusterConfig): Promise<void> {
  await writeFileAtomic(join(dataDir, 'cluster.json'), JSON.stringify(cfg, null, 2) + '\n');
}

const IP_RE = /^(\d{1,3}\.){3}\d{1,3}$/;

export async function initCluster(o: {
  dataDir: string;
  store: Store;
  advertise: string;
  apiPort: number;
  hostName: string;
  log: Logger;
}): Promise<{ advertise: string; etcd: string[]; members: number; restartDaemon: boolean }> {
  if (!IP_RE.test(o.advertise)) {
    throw new FdError('FD_BAD_ADDRESS', `"${o.advertise}" is not an IPv4 address`, {
      hint: 'give the address other hosts reach this one on',
    });
  }
  const cfg = await loadMemberConfig(join(o.dataDir, 'etcd'));
  const { members } = await o.store.client.cluster.memberList({});
  if (cfg.advertise && cfg.advertise !== o.advertise) {
    throw new FdError('FD_CLUSTER_EXISTS', `this host already advertises ${cfg.advertise}`, { status: 409 });
  }
  if (members.length > 1 && !cfg.advertise) {
    throw new FdError('FD_CLUSTER_EXISTS', 'this etcd already has several members', { status: 409 });
  }
  const ports = await memberPorts(o.dataDir);
  const peerUrl = `http://${o.advertise}:${ports.peer}`;
  const me = members[0]!;
  if (!me.peerURLs.includes(peerUrl)) {
    await o.store.client.cluster.memberUpdate({ ID: me.ID, peerURLs: [peerUrl] });
  }
  await saveMemberConfig(o.dataDir, { ...cfg, advertise: o.advertise });
  if (!cfg.advertise) {
    // Restart the member so it listens on the advertised address too (data and ID stay).
    o.log.info('restarting the etcd member to listen on the advertised address', { advertise: o.advertise });
    await stopEmbeddedEtcd(o.dataDir);
    await ensureEmbeddedEtcd(o.dataDir, o.log);
  }
  const etcd = [`http://${o.advertise}:${ports.client}`];
  const prev = await loadClusterConfig(o.dataDir);
  const listen = `${o.advertise}:${o.apiPort}`;
  await saveClusterConfig(o.dataDir, { ...prev, etcd, listen, hostName: o.hostName });
  return { advertise: o.advertise, etcd, members: members.length, restartDaemon: true };
}

export interface JoinAnswer {
  /** True when the new host runs an etcd member; false: it is a client of `etcd`. */
  member: boolean;
  name: string;
  initialCluster: string | null;
  etcd: string[];
}

export async function addMember(store: Store, req: { name: string; peerUrl: string }): Promise<JoinAnswer> {
  let { members } = await store.client.cluster.memberList({});
  const clientUrls = (ms: typeof members): string[] =>
    ms.flatMap((m) => m.clientURLs.filter((u) => !u.includes('://127.0.0.1:')));
  const existing = members.find((m) => m.peerURLs.includes(req.peerUrl));
  if (!existing && members.length < MAX_MEMBERS) {
    if (!clientUrls(members).length) {
      throw new FdError('FD_CLUSTER_NOT_INITIALIZED', 'this host is not set up as a cluster yet', {
        hint: 'run "flightdeck cluster init --advertise IP" on it first',
        status: 409,
      });
    }
    const res = await store.client.cluster.memberAdd({ peerURLs: [req.peerUrl] });
    members = res.members;
  }
  const isMember = members.some((m) => m.peerURLs.includes(req.peerUrl));
  const initialCluster = isMember
    ? members.map((m) => `${m.peerURLs.includes(req.peerUrl) ? req.name : m.name}=${m.peerURLs[0]}`).join(',')
    : null;
  return { member: isMember, name: req.name, initialCluster, etcd: clientUrls(members) };
}

/** The joining side: starts this host's etcd member (when it is one) and records cluster.json. */
export async function joinCluster(o: {
  dataDir: string;
  answer: JoinAnswer;
  advertise: string;
  apiPort: number;
  hostName: string;
  log: Logger;
}): Promise<ClusterConfig> {
  const ports = await memberPorts(o.dataDir);
  let etcd = o.answer.etcd;
  if (o.answer.member) {
    await saveMemberConfig(o.dataDir, {
      name: o.hostName,
      advertise: o.advertise,
      initialCluster: o.answer.initialCluster!,
      state: 'existing',
    });
    await ensureEmbeddedEtcd(o.dataDir, o.log);
    etcd = [
      `http://${o.advertise}:${ports.client}`,
      ...etcd.filter((u) => !u.includes(`${o.advertise}:${ports.client}`)),
    ];
  }
  const cfg: ClusterConfig = { etcd, listen: `${o.advertise}:${o.apiPort}`, hostName: o.hostName };
  await saveClusterConfig(o.dataDir, cfg);
  return cfg;
}
