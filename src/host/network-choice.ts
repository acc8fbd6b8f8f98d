/**
 * The default NAT network of a new installation: a bridge name and subnet that no interface,
 * route or other flightdeck daemon of this machine uses, so that daemons with their own data
 * dirs run side by side (the first gets fdbr0 / 10.88.0.0/24, the next fdbr1 / 10.88.1.0/24...).
 * The caller records the choice in its store, so it is made once per installation.
 *
 * A bridge only exists while its daemon has brought it up, so a choice is also claimed in a
 * machine-wide directory that every daemon reads: a daemon that is stopped, or not yet started
 * after a reboot, keeps its bridge and subnet. A claim whose data dir is gone is stale.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fsyncDir } from '../core/atomic-file.js';
import { FdError, isErrno } from '../core/errors.js';
import { run } from '../core/process.js';
import { parseSubnet } from './network.js';

export interface NetworkChoice {
  bridge: string;
  cidr: string;
}

interface Prefix {
  network: number;
  prefix: number;
}

/** Where daemons record the bridges they chose (survives reboots, like the data dirs). */
export function claimsDir(): string {
  return process.env.FLIGHTDECK_NET_CLAIMS ?? '/var/lib/flightdeck-host/bridges';
}

/** The i-th candidate (0..255): fdbrI on 10.88.I.0/24. */
export function candidate(i: number): NetworkChoice {
  return { bridge: `fdbr${i}`, cidr: `10.88.${i}.0/24` };
}

const CANDIDATES = 256;

function toPrefix(text: string): Prefix | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(text);
  if (!m) return undefined;
  const prefix = m[5] === undefined ? 32 : Number(m[5]);
  const ip = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { network: (ip & mask) >>> 0, prefix };
}

/** True when two IPv4 prefixes share an address. */
export function overlaps(a: string, b: string): boolean {
  const x = toPrefix(a);
  const y = toPrefix(b);
  if (!x || !y) return false;
  const p = Math.min(x.prefix, y.prefix);
  const mask = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
  return (x.network & mask) >>> 0 === (y.network & mask) >>> 0;
}

/** Interface names, and the prefixes of every route and address of this machine (not the default route). */
export async function hostAddressUse(): Promise<{ links: Set<string>; prefixes: string[] }> {
  const json = async <T>(args: string[]): Promise<T[]> => {
    const r = await run('ip', ['-j', ...args], { allowFail: true });
    return r.code === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as T[]) : [];
  };
  const links = await json<{ ifname: string }>(['link', 'show']);
  const routes = await json<{ dst?: string }>(['-4', 'route', 'show', 'table', 'all']);
  const addrs = await json<{ addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }> }>([
    '-4',
    'addr',
    'show',
  ]);
  const prefixes = [
    ...routes.flatMap((r) => (r.dst && r.dst !== 'default' ? [r.dst] : [])),
    ...addrs.flatMap((a) =>
      (a.addr_info ?? []).flatMap((i) => (i.local && i.prefixlen !== undefined ? [`${i.local}/${i.prefixlen}`] : [])),
    ),
  ];
  return { links: new Set(links.map((l) => l.ifname.split('@')[0]!)), prefixes };
}

/** True when no route or address of this machine (but the default route) overlaps `cidr`. */
export async function subnetFree(cidr: string): Promise<boolean> {
  return !(await hostAddressUse()).prefixes.some((p) => overlaps(p, cidr));
}

interface Claim extends NetworkChoice {
  dataDir: string;
  at: string;
}

async function readClaim(path: string): Promise<Claim | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Claim;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    if (err instanceof SyntaxError) return undefined; // torn by a crash mid-write: nobody's
    throw err;
  }
}

/**
 * Claims `c` for `dataDir`: true when it is now (or already was) this data dir's. A claim of a
 * data dir that no longer exists is taken over.
 */
export async function claimNetwork(c: NetworkChoice, dataDir: string): Promise<boolean> {
  const dir = claimsDir();
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const path = join(dir, `${c.bridge}.json`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      // O_EXCL: of two daemons choosing at once, one wins the file
      const fh = await open(path, 'wx', 0o644);
      try {
        await fh.writeFile(JSON.stringify({ ...c, dataDir, at: new Date().toISOString() } satisfies Claim) + '\n');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsyncDir(dir);
      return true;
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      const other = await readClaim(path);
      if (other?.dataDir === dataDir) return true;
      if (other && existsSync(other.dataDir)) return false;
      await rm(path, { force: true });
    }
  }
  return false;
}

/** Gives a claim back (the network is removed, or the data dir chose user networking). */
export async function releaseNetwork(bridge: string, dataDir: string): Promise<void> {
  const path = join(claimsDir(), `${bridge}.json`);
  if ((await readClaim(path))?.dataDir === dataDir) await rm(path, { force: true });
}

/**
 * Picks and claims the first candidate whose bridge does not exist and whose subnet overlaps no
 * route or address here. FD_NET_NO_FREE_SUBNET when all 256 are used.
 */
export async function chooseDefaultNetwork(dataDir: string): Promise<NetworkChoice> {
  const use = await hostAddressUse();
  for (let i = 0; i < CANDIDATES; i++) {
    const c = candidate(i);
    parseSubnet(c.cidr);
    if (use.links.has(c.bridge)) continue;
    if (use.prefixes.some((p) => overlaps(p, c.cidr))) continue;
    if (await claimNetwork(c, dataDir)) return c;
  }
  throw new FdError('FD_NET_NO_FREE_SUBNET', 'no free bridge and subnet in 10.88.0.0/16 for the default network', {
    hint: 'remove unused fdbr bridges, or start the daemon with --default-network user',
  });
}
