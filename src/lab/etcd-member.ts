/**
 * One member of the lab's etcd cluster, running in its host's namespace on the host's lab IP
 * (and on the namespace's loopback, so `lab exec hN -- etcdctl ...` works unconfigured). Its
 * data stays under the host's data dir: a member killed by `lab fail` and started again by
 * `lab heal` rejoins with its own data (etcd ignores the initial-cluster flags then).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { etcdHealthy } from '../cluster/clustering/etcd-process.js';
import { FdError } from '../core/errors.js';
import { sleep } from '../core/process.js';
import { ETCD_CLIENT_PORT, ETCD_PEER_PORT } from './names.js';
import { requestJson } from './http.js';
import { livePid, logTail, running, spawnDetached, type PrivateDirs } from './procs.js';

export interface MemberHost {
  name: string;
  netns: string;
  ip: string;
  dataDir: string;
}

export const memberClientUrl = (ip: string): string => `http://${ip}:${ETCD_CLIENT_PORT}`;
export const memberPeerUrl = (ip: string): string => `http://${ip}:${ETCD_PEER_PORT}`;
const memberDir = (h: MemberHost): string => join(h.dataDir, 'etcd-member');
export const memberLog = (h: MemberHost): string => join(memberDir(h), 'etcd.log');
const memberPidFile = (h: MemberHost): string => join(memberDir(h), 'etcd.pid');

/** Pid of the host's etcd member when it runs. */
export function memberPid(h: MemberHost): Promise<number | undefined> {
  return livePid(memberPidFile(h), 'etcd');
}

export async function startEtcdMember(
  h: MemberHost,
  cluster: MemberHost[],
  clusterToken: string,
  privateDirs?: PrivateDirs,
): Promise<number> {
  const running0 = await memberPid(h);
  if (running0 !== undefined) return running0;
  await mkdir(memberDir(h), { recursive: true, mode: 0o700 });
  const client = memberClientUrl(h.ip);
  const argv = [
    'etcd',
    `--name=${h.name}`,
    `--data-dir=${join(memberDir(h), 'data')}`,
    `--listen-client-urls=${client},http://127.0.0.1:${ETCD_CLIENT_PORT}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${memberPeerUrl(h.ip)}`,
    `--initial-advertise-peer-urls=${memberPeerUrl(h.ip)}`,
    `--initial-cluster=${cluster.map((m) => `${m.name}=${memberPeerUrl(m.ip)}`).join(',')}`,
    '--initial-cluster-state=new',
    `--initial-cluster-token=${clusterToken}`,
    '--auto-compaction-mode=periodic',
    '--auto-compaction-retention=1h',
    // A member back from a partition must not depose a healthy leader (without pre-vote it
    // does: its higher term forces an election, renewals stall and healthy hosts fence).
    '--pre-vote=true',
    '--log-level=warn',
    '--logger=zap',
  ];
  return spawnDetached({
    netns: h.netns,
    argv,
    env: process.env,
    logFile: memberLog(h),
    pidFile: memberPidFile(h),
    privateDirs,
  });
}

/**
 * Waits until the member answers healthy, which for etcd means the cluster has a leader: with
 * three members starting together that needs two of them up.
 */
export async function waitMemberHealthy(h: MemberHost, pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await etcdHealthy(memberClientUrl(h.ip), 1000)) return;
    if (!(await running(pid))) break;
    await sleep(100);
  }
  throw new FdError(
    'FD_LAB_ETCD_FAILED',
    `etcd member on ${h.name} did not become healthy: ${await logTail(memberLog(h))}`,
    {
      hint: `see ${memberLog(h)}`,
    },
  );
}

export interface EtcdMemberInfo {
  name: string;
  peerURLs: string[];
  clientURLs: string[];
}

/** The cluster's member list as etcd reports it (through its JSON gateway). */
export async function etcdMemberList(endpoint: string): Promise<EtcdMemberInfo[]> {
  const res = await requestJson<{ members?: Partial<EtcdMemberInfo>[] }>(
    { url: endpoint },
    'POST',
    '/v3/cluster/member/list',
    {},
  );
  if (res.status !== 200) throw new Error(`etcd member list at ${endpoint} answered ${res.status}`);
  return (res.body.members ?? []).map((m) => ({
    name: m.name ?? '',
    peerURLs: m.peerURLs ?? [],
    clientURLs: m.clientURLs ?? [],
  }));
}
