/**
 * Names and addresses of a lab, derived from its prefix alone, so that `lab down` can find
 * every piece (namespaces, links, bridge, nft table, data dir) even when a crashed `lab up`
 * never wrote its state file. Link names stay within the kernel's 15 characters.
 */
import { join } from 'node:path';
import { FdError } from '../core/errors.js';

/** Everything of every lab lives under here; one folder per prefix. */
export const LAB_ROOT = '/var/lib/flightdeck-lab';
export const DEFAULT_PREFIX = 'default';
export const DEFAULT_SUBNET_BASE = '10.77';
export const API_PORT = 8420;
export const ETCD_CLIENT_PORT = 2379;
export const ETCD_PEER_PORT = 2380;
/** etcd clusters of 3 members: a majority survives one failed host. */
export const MAX_ETCD_MEMBERS = 3;
export const MAX_HOSTS = 64;

const PREFIX_RE = /^[a-z][a-z0-9]{0,7}$/;

export const isPrefix = (name: string): boolean => PREFIX_RE.test(name);

export function checkPrefix(prefix: string): string {
  if (!isPrefix(prefix)) {
    throw new FdError('FD_LAB_BAD_PREFIX', `lab prefix "${prefix}" is not 1-8 lowercase letters and digits`, {
      hint: 'e.g. --prefix demo (it becomes part of namespace and link names)',
    });
  }
  return prefix;
}

export const labDir = (prefix: string): string => join(LAB_ROOT, prefix);
export const stateFile = (prefix: string): string => join(labDir(prefix), 'lab.json');
export const hostName = (i: number): string => `h${i}`;
export const hostDataDir = (prefix: string, host: string): string => join(labDir(prefix), host);
export const netnsName = (prefix: string, host: string): string => `fd-lab-${prefix}-${host}`;
export const netnsPrefix = (prefix: string): string => `fd-lab-${prefix}-`;
/** Bridge in the root namespace: `fdl<prefix>-br` (at most 14 characters). */
export const bridgeName = (prefix: string): string => `fdl${prefix}-br`;
/** Root-namespace end of host i's veth; the other end is `eth0` inside the host. */
export const vethName = (prefix: string, i: number): string => `fdl${prefix}-${i}`;
export const linkPrefix = (prefix: string): string => `fdl${prefix}-`;
/** nft table in the root namespace that keeps the lab's traffic inside the lab. */
export const isolationTable = (prefix: string): string => `fdlab_${prefix}`;
/** nft table inside a host's namespace while that host is partitioned. */
export const PARTITION_TABLE = 'fdlab_partition';
export const HOST_IFACE = 'eth0';

export interface Subnet {
  /** First three octets, e.g. "10.77.0". */
  base: string;
  cidr: string;
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/.exec(cidr);
  if (!m || [m[1], m[2], m[3]].some((o) => Number(o) > 255)) {
    throw new FdError('FD_LAB_BAD_SUBNET', `lab subnet "${cidr}" is not an IPv4 /24 like 10.77.0.0/24`, {
      hint: 'pass --subnet A.B.C.0/24',
    });
  }
  return { base: `${m[1]}.${m[2]}.${m[3]}`, cidr };
}

/** The root namespace's address on the bridge: how the CLI outside reaches every host. */
export const gatewayIp = (s: Subnet): string => `${s.base}.1`;
/** Host i (1-based) is .10+i. */
export const hostIp = (s: Subnet, i: number): string => `${s.base}.${10 + i}`;
