/**
 * Host networks: a managed Linux bridge with NAT (nftables table `ip flightdeck`) and DHCP/DNS
 * (one dnsmasq per bridge, with its own pid, lease and log files under the data dir) is the
 * default network VMs attach to through per-NIC taps (tap.ts). Everything is idempotent and keyed
 * by the network's name, so `ensure` after a daemon restart adopts what is already there and
 * `remove` takes away exactly what `ensure` made (rules are found by their comment).
 * Where bridges are not allowed (no CAP_NET_ADMIN), `withUserModeFallback` turns bridged NICs
 * into QEMU user-mode NICs.
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../core/atomic-file.js';
import { FdError, isErrno } from '../core/errors.js';
import { checkName } from '../core/ids.js';
import { run, tail, waitFor } from '../core/process.js';
import type { VmSpec } from '../qemu/spec.js';
import { identify, terminate } from './pidfile.js';
import { linkExists } from './tap.js';

export const NFT_TABLE = 'flightdeck';

export interface NetworkSpec {
  name: string;
  /** Linux bridge name (at most 15 characters). */
  bridge: string;
  /** IPv4 subnet in CIDR form; the bridge takes the first host address as the gateway. */
  subnet: string;
  /** Masquerade traffic leaving the subnet (default true). */
  nat?: boolean;
  /** Serve DHCP (and DNS) on the bridge (default true). */
  dhcp?: boolean;
  /**
   * This host's address on the bridge (default: the subnet's first address). Hosts sharing one
   * VXLAN segment each need their own.
   */
  address?: string;
  /**
   * DHCP answers only these MAC -> IP bindings (dnsmasq hosts file, reloaded on change), so
   * every host of a cluster network gives a VM the same address wherever it runs.
   */
  staticLeases?: { mac: string; ip: string }[];
  /** Extend the bridge across hosts: a VXLAN device on it, flooding to every peer. */
  vxlan?: { vni: number; local: string; peers: string[] };
}

export interface NetworkStatus {
  name: string;
  bridge: string;
  subnet: string;
  gateway: string;
  bridgeUp: boolean;
  dnsmasqPid?: number;
  natRules: number;
  leases: Array<{ mac: string; ip: string; hostname: string }>;
}

interface Subnet {
  network: number;
  prefix: number;
  gateway: string;
  rangeStart: string;
  rangeEnd: string;
}

function ipToInt(ip: string): number {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw badSubnet(ip);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}
const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

function badSubnet(text: string): FdError {
  return new FdError('FD_NET_BAD_SUBNET', `"${text}" is not an IPv4 subnet like 10.88.0.0/24`, {
    hint: 'give a private IPv4 network in CIDR form with a prefix from /16 to /29',
  });
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr);
  if (!m) throw badSubnet(cidr);
  const prefix = Number(m[2]);
  if (prefix < 16 || prefix > 29) throw badSubnet(cidr);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const network = (ipToInt(m[1]!) & mask) >>> 0;
  const size = 2 ** (32 - prefix);
  const first = network + 1;
  const last = network + size - 2;
  // DHCP hands out the upper half, leaving the lower half for static addresses
  const rangeStart = Math.max(first + 1, network + Math.floor(size / 2));
  return { network, prefix, gateway: intToIp(first), rangeStart: intToIp(rangeStart), rangeEnd: intToIp(last) };
}

export class HostNetworks {
  constructor(private readonly opts: { dataDir: string }) {}

  private dir(name: string): string {
    return join(this.opts.dataDir, 'networks', name);
  }

  /** Creates (or adopts) the bridge, its address, NAT rules and dnsmasq. Idempotent. */
  async ensure(spec: NetworkSpec): Promise<NetworkStatus> {
    checkName('network', spec.name);
    if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(spec.bridge))
      throw new FdError('FD_NET_BAD_BRIDGE', `"${spec.bridge}" is not a Linux interface name (1-15 characters)`);
    const sn = parseSubnet(spec.subnet);
    const dir = this.dir(spec.name);
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(join(dir, 'network.json'), JSON.stringify(spec, null, 2) + '\n');

    if (!(await linkExists(spec.bridge))) await run('ip', ['link', 'add', 'name', spec.bridge, 'type', 'bridge']);
    const address = spec.address ?? sn.gateway;
    await run('ip', ['addr', 'replace', `${address}/${sn.prefix}`, 'dev', spec.bridge]);
    if (spec.vxlan) await this.ensureVxlan(spec.bridge, spec.vxlan);
    await run('ip', ['link', 'set', 'dev', spec.bridge, 'up']);

    if (spec.nat !== false) {
      await writeFileAtomic('/proc/sys/net/ipv4/ip_forward', '1\n').catch(async () => {
        await run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
      });
      await this.ensureNat(spec, sn);
    }
    if (spec.dhcp !== false) {
      if (spec.staticLeases) await this.writeStaticLeases(spec.name, spec.staticLeases);
      await this.ensureDnsmasq(spec, sn);
    }
    return this.status(spec.name);
  }

  /** The VXLAN device of a bridge, and head-end replication to each peer (nothing learned). */
  private async ensureVxlan(bridge: string, vx: { vni: number; local: string; peers: string[] }): Promise<void> {
    const dev = vxlanDevice(vx.vni);
    if (!(await linkExists(dev))) {
      await run('ip', [
        'link',
        'add',
        dev,
        'type',
        'vxlan',
        'id',
        String(vx.vni),
        'dstport',
        '4789',
        'local',
        vx.local,
        'nolearning',
      ]);
    }
    await run('ip', ['link', 'set', dev, 'master', bridge]);
    await run('ip', ['link', 'set', dev, 'up']);
    await this.setVxlanPeers(vx.vni, vx.peers);
  }

  /** Replaces the flood list of a VXLAN device with `peers` (hosts come and go). */
  async setVxlanPeers(vni: number, peers: string[]): Promise<void> {
    const dev = vxlanDevice(vni);
    const r = await run('bridge', ['fdb', 'show', 'dev', dev], { allowFail: true });
    const have = new Set([...r.stdout.matchAll(/^00:00:00:00:00:00 dst (\S+)/gm)].map((m) => m[1]!));
    for (const p of peers)
      if (!have.has(p)) await run('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', dev, 'dst', p]);
    for (const p of have)
      if (!peers.includes(p))
        await run('bridge', ['fdb', 'del', '00:00:00:00:00:00', 'dev', dev, 'dst', p], { allowFail: true });
  }

  /** Writes the MAC -> IP bindings and makes a running dnsmasq reread them. */
  async setStaticLeases(name: string, leases: { mac: string; ip: string }[]): Promise<void> {
    await this.writeStaticLeases(name, leases);
    const pid = await this.dnsmasqPid(name);
    if (pid) process.kill(pid, 'SIGHUP');
  }

  private async writeStaticLeases(name: string, leases: { mac: string; ip: string }[]): Promise<void> {
    const text = leases.map((l) => `${l.mac},${l.ip}`).join('\n') + '\n';
    const path = this.hostsFile(name);
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    await chmod(dirname(path), 0o755);
    await chmod(dirname(dirname(path)), 0o755);
    await writeFileAtomic(path, text, { mode: 0o644 });
  }

  /**
   * dnsmasq rereads its hosts file on SIGHUP after dropping to `nobody`, who cannot enter our
   * 0700 data dir: the bindings (MACs and addresses, nothing secret) live under /run instead.
   */
  private hostsFile(name: string): string {
    const key = createHash('sha256').update(this.dir(name)).digest('hex').slice(0, 16);
    return join('/run/flightdeck-dhcp', key, 'hosts');
  }

  /** Stops dnsmasq, deletes the rules and the bridge (with any taps still on it), forgets the network. */
  async remove(name: string): Promise<void> {
    const spec = await this.read(name);
    const pid = await this.dnsmasqPid(name);
    if (pid) {
      const id = identify(pid);
      if (id) await terminate(id, 3000);
    }
    await this.deleteRules(name);
    if (spec?.vxlan && (await linkExists(vxlanDevice(spec.vxlan.vni))))
      await run('ip', ['link', 'del', 'dev', vxlanDevice(spec.vxlan.vni)]);
    if (spec && (await linkExists(spec.bridge))) await run('ip', ['link', 'del', 'dev', spec.bridge]);
    await rm(this.dir(name), { recursive: true, force: true });
    await rm(dirname(this.hostsFile(name)), { recursive: true, force: true });
  }

  async status(name: string): Promise<NetworkStatus> {
    const spec = await this.read(name);
    if (!spec) throw new FdError('FD_NET_NOT_FOUND', `no network named ${name} on this host`);
    const sn = parseSubnet(spec.subnet);
    const pid = await this.dnsmasqPid(name);
    return {
      name,
      bridge: spec.bridge,
      subnet: spec.subnet,
      gateway: sn.gateway,
      bridgeUp: await linkExists(spec.bridge),
      ...(pid ? { dnsmasqPid: pid } : {}),
      natRules: (await this.ruleHandles(name)).length,
      leases: await this.leases(name),
    };
  }

  async list(): Promise<NetworkStatus[]> {
    const { readdir } = await import('node:fs/promises');
    let names: string[] = [];
    try {
      names = (await readdir(join(this.opts.dataDir, 'networks'))).sort();
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    return Promise.all(names.map((n) => this.status(n)));
  }

  /** DHCP leases dnsmasq handed out on this network. */
  async leases(name: string): Promise<NetworkStatus['leases']> {
    try {
      const text = await readFile(join(this.dir(name), 'leases'), 'utf8');
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(' '))
        .map((f) => ({ mac: f[1]!, ip: f[2]!, hostname: f[3] ?? '*' }));
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }
  }

  private async read(name: string): Promise<NetworkSpec | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir(name), 'network.json'), 'utf8')) as NetworkSpec;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }
  }

  // ---- nftables ----

  private async ensureNat(spec: NetworkSpec, sn: Subnet): Promise<void> {
    if ((await this.ruleHandles(spec.name)).length) return;
    const cidr = `${intToIp(sn.network)}/${sn.prefix}`;
    const c = `comment "fd-net:${spec.name}"`;
    // one table for all our networks; base chains are created idempotently by `add`
    const script = [
      `add table ip ${NFT_TABLE}`,
      `add chain ip ${NFT_TABLE} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
      `add chain ip ${NFT_TABLE} forward { type filter hook forward priority filter; policy accept; }`,
      `add rule ip ${NFT_TABLE} postrouting ip saddr ${cidr} ip daddr != ${cidr} masquerade ${c}`,
      `add rule ip ${NFT_TABLE} forward iifname "${spec.bridge}" accept ${c}`,
      `add rule ip ${NFT_TABLE} forward oifname "${spec.bridge}" ct state established,related accept ${c}`,
    ].join('\n');
    await run('nft', ['-f', '-'], { input: script + '\n' });
  }

  private async ruleHandles(name: string): Promise<Array<{ chain: string; handle: number }>> {
    const r = await run('nft', ['-j', 'list', 'table', 'ip', NFT_TABLE], { allowFail: true });
    if (r.code !== 0) return [];
    const doc = JSON.parse(r.stdout) as {
      nftables: Array<{ rule?: { chain: string; handle: number; comment?: string } }>;
    };
    return doc.nftables.flatMap((x) =>
      x.rule && x.rule.comment === `fd-net:${name}` ? [{ chain: x.rule.chain, handle: x.rule.handle }] : [],
    );
  }

  private async deleteRules(name: string): Promise<void> {
    for (const h of await this.ruleHandles(name)) {
      await run('nft', ['delete', 'rule', 'ip', NFT_TABLE, h.chain, 'handle', String(h.handle)]);
    }
    // The table and its empty accept-policy chains stay: deleting them when "no rules are left"
    // would race with another network adding its rules between our check and the delete.
  }

  // ---- dnsmasq ----

  private async dnsmasqPid(name: string): Promise<number | undefined> {
    try {
      const pid = Number((await readFile(join(this.dir(name), 'dnsmasq.pid'), 'utf8')).trim());
      if (!Number.isSafeInteger(pid) || pid <= 0 || !identify(pid)) return undefined;
      // a recycled pid is not our dnsmasq: its command line names our pid file
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
      return cmd.includes(join(this.dir(name), 'dnsmasq.pid')) ? pid : undefined;
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }
  }

  private async ensureDnsmasq(spec: NetworkSpec, sn: Subnet): Promise<void> {
    if (await this.dnsmasqPid(spec.name)) return;
    const dir = this.dir(spec.name);
    const pidfile = join(dir, 'dnsmasq.pid');
    await rm(pidfile, { force: true });
    const args = [
      `--pid-file=${pidfile}`,
      `--dhcp-leasefile=${join(dir, 'leases')}`,
      `--log-facility=${join(dir, 'dnsmasq.log')}`,
      '--conf-file=/dev/null',
      '--bind-interfaces',
      `--interface=${spec.bridge}`,
      '--except-interface=lo',
      `--listen-address=${spec.address ?? sn.gateway}`,
      ...(spec.staticLeases
        ? [
            `--dhcp-range=${intToIp(sn.network)},static,${intToIp((0xffffffff << (32 - sn.prefix)) >>> 0)},12h`,
            `--dhcp-hostsfile=${this.hostsFile(spec.name)}`,
            `--dhcp-option=option:router,${spec.address ?? sn.gateway}`,
          ]
        : [`--dhcp-range=${sn.rangeStart},${sn.rangeEnd},12h`]),
      '--dhcp-authoritative',
      '--dhcp-no-override',
    ];
    // dnsmasq forks into the background itself and writes its pid file: it outlives us
    const child = spawn('dnsmasq', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((res) => {
      child.once('exit', (c) => res(c));
      child.once('error', () => res(-1));
    });
    if (code !== 0)
      throw new FdError(
        'FD_NET_DHCP_FAILED',
        `dnsmasq for ${spec.bridge} did not start: ${tail(err) || `exit ${code}`}`,
        {
          hint: 'is another DHCP server bound to this bridge?',
        },
      );
    await waitFor('dnsmasq pid file', async () => ((await this.dnsmasqPid(spec.name)) ? true : undefined), {
      timeoutMs: 5000,
    });
  }
}

/** True when this host lets us create bridges (root or CAP_NET_ADMIN); probes with a throwaway one. */
export async function bridgesAllowed(): Promise<boolean> {
  const name = `fdprobe${process.pid % 100000}`;
  const r = await run('ip', ['link', 'add', 'name', name, 'type', 'bridge'], { allowFail: true });
  if (r.code !== 0) return false;
  await run('ip', ['link', 'del', 'dev', name], { allowFail: true });
  return true;
}

/** The spec with every bridged NIC turned into a user-mode NIC (same MAC), for hosts without bridges. */
export function withUserModeFallback(spec: VmSpec): VmSpec {
  return {
    ...spec,
    nics: spec.nics.map((n) => (n.network.kind === 'bridge' ? { ...n, network: { kind: 'user', hostfwd: [] } } : n)),
  };
}

export const vxlanDevice = (vni: number): string => `fdvxl${vni}`;
