/**
 * Planning a lab before anything exists: its hosts, names and addresses (planLab), and a
 * subnet that no route of this machine and no other lab uses (pickSubnet), claimed under a
 * lock so labs coming up side by side never pick the same one (withSubnetLock).
 */
import { mkdir, readdir, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';
import { run, sleep } from '../core/process.js';
import {
  bridgeName,
  DEFAULT_SUBNET_BASE,
  gatewayIp,
  hostDataDir,
  hostIp,
  hostName,
  isPrefix,
  LAB_ROOT,
  MAX_ETCD_MEMBERS,
  netnsName,
  parseSubnet,
  vethName,
  type Subnet,
} from './names.js';
import { subnetFree } from './net.js';
import { readState, type LabHost, type LabState } from './state.js';
import { memberClientUrl } from './etcd-member.js';
import { apiUrlOf } from './host-daemon.js';

/** Prefixes of the labs on this machine (with a dir under LAB_ROOT or any namespace left). */
export async function labPrefixes(): Promise<string[]> {
  const found = new Set<string>();
  try {
    for (const d of await readdir(LAB_ROOT, { withFileTypes: true }))
      if (d.isDirectory() && isPrefix(d.name)) found.add(d.name);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  const ns = await run('ip', ['netns', 'list'], { allowFail: true });
  for (const m of ns.stdout.matchAll(/^fd-lab-([a-z0-9]+)-h\d+/gm)) found.add(m[1]!);
  return [...found].sort();
}

export async function pickSubnet(requested: string | undefined): Promise<Subnet> {
  if (requested !== undefined) {
    const s = parseSubnet(requested);
    if (!(await subnetFree(s.cidr))) {
      throw new FdError('FD_LAB_SUBNET_IN_USE', `${s.cidr} overlaps a network this machine already routes`, {
        hint: 'pick another --subnet (see "ip route"), or leave it out to get a free 10.77.N.0/24',
      });
    }
    return s;
  }
  const taken = new Set<string>();
  for (const p of await labPrefixes()) {
    const st = await readState(p).catch(() => undefined);
    if (st) taken.add(st.subnet);
  }
  for (let n = 0; n < 256; n++) {
    const s = parseSubnet(`${DEFAULT_SUBNET_BASE}.${n}.0/24`);
    if (!taken.has(s.cidr) && (await subnetFree(s.cidr))) return s;
  }
  throw new FdError('FD_LAB_SUBNET_IN_USE', `every ${DEFAULT_SUBNET_BASE}.N.0/24 is in use`, {
    hint: 'pass --subnet A.B.C.0/24, or remove labs with "flightdeck lab down"',
  });
}

/** What a lab of `n` hosts on `subnet` consists of, before any of it exists. */
export function planLab(prefix: string, n: number, subnet: Subnet): LabState {
  const hosts: LabHost[] = [];
  for (let i = 1; i <= n; i++) {
    const name = hostName(i);
    const ip = hostIp(subnet, i);
    hosts.push({
      name,
      index: i,
      netns: netnsName(prefix, name),
      ip,
      apiUrl: apiUrlOf(ip),
      dataDir: hostDataDir(prefix, name),
      token: '',
      veth: vethName(prefix, i),
      etcdMember: i <= MAX_ETCD_MEMBERS ? memberClientUrl(ip) : null,
    });
  }
  return {
    version: 1,
    prefix,
    phase: 'creating',
    subnet: subnet.cidr,
    bridge: bridgeName(prefix),
    gatewayIp: gatewayIp(subnet),
    hosts,
    etcdEndpoints: hosts.flatMap((h) => (h.etcdMember ? [h.etcdMember] : [])),
    accel: '',
    failures: {},
    createdAt: new Date().toISOString(),
  };
}

/**
 * Runs `fn` holding LAB_ROOT/.lock (a directory: mkdir is atomic). A lock older than 30 s is
 * left from a killed process and taken over.
 */
export async function withSubnetLock<T>(fn: () => Promise<T>): Promise<T> {
  const lock = join(LAB_ROOT, '.lock');
  for (let i = 0; ; i++) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      const age = Date.now() - (await stat(lock).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 30_000) await rmdir(lock).catch(() => undefined);
      else if (i > 600)
        throw new FdError('FD_LAB_BUSY', `${lock} is held by another "lab up"`, {
          hint: `remove ${lock} if no "lab up" runs`,
        });
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(lock).catch(() => undefined);
    // Refused before anything was made: leave no empty LAB_ROOT behind (ENOTEMPTY otherwise).
    await rmdir(LAB_ROOT).catch(() => undefined);
  }
}
