/**
 * Networks on this host: the default NAT network of a new installation, every NAT network's
 * bridge, rules and DHCP, the cluster (VXLAN) networks' bridges, flood lists and DHCP bindings,
 * and the fixed addresses VMs take on cluster networks.
 */
import { FdError } from '../../core/errors.js';
import { bridgesAllowed, HostNetworks } from '../../host/network.js';
import { chooseDefaultNetwork, claimNetwork } from '../../host/network-choice.js';
import type { HostRecord, NetworkRecord } from '../state/model.js';
import type { State } from '../state/state.js';

/** .1-.99 of a cluster network are hosts' own addresses on the segment; VMs get .100 and up. */
const HOST_SLOTS = 99;
const FIRST_VM_ADDRESS = 100;

export class NetworkProvisioner {
  private readonly networks: HostNetworks;

  constructor(private readonly o: { state: State; dataDir: string; hostName: string; defaultNetwork: 'nat' | 'user' }) {
    this.networks = new HostNetworks({ dataDir: o.dataDir });
  }

  /**
   * Records the installation's default network (once), then brings every network up here. The
   * default network is chosen once (a free bridge and subnet: daemons run side by side) and
   * recorded; an installation from before claims what it recorded.
   */
  async init(): Promise<void> {
    const createdAt = new Date().toISOString();
    const existing = this.o.state.catalog.findNetwork('default');
    if (existing?.kind === 'nat' && existing.bridge && existing.cidr)
      await claimNetwork({ bridge: existing.bridge, cidr: existing.cidr }, this.o.dataDir);
    if (!existing) {
      const net: NetworkRecord =
        this.o.defaultNetwork === 'nat' && (await bridgesAllowed())
          ? { name: 'default', kind: 'nat', ...(await chooseDefaultNetwork(this.o.dataDir)), vni: null, createdAt }
          : { name: 'default', kind: 'user', bridge: null, cidr: '10.0.2.0/24', vni: null, createdAt };
      await this.o.state.catalog.createNetwork(net); // false when another daemon recorded one first
    }
    await this.ensureNat();
    await this.refreshCluster();
  }

  /** Brings up every NAT network's bridge, rules and DHCP on this host (idempotent). */
  async ensureNat(): Promise<void> {
    for (const n of this.o.state.catalog.listNetworks()) {
      if (n.kind !== 'nat' || !n.bridge || !n.cidr) continue;
      await this.networks.ensure({ name: n.name, bridge: n.bridge, subnet: n.cidr, nat: true, dhcp: true });
    }
  }

  /**
   * Brings this host's side of every cluster (VXLAN) network up to date: its bridge address
   * (a slot of its own), the VXLAN flood list (every other host) and the DHCP bindings (every
   * VM on the network, wherever it runs). Called at start and when hosts or VMs change.
   */
  async refreshCluster(): Promise<void> {
    const all = this.o.state.catalog.listNetworks();
    // A network deleted from the cluster goes from this host too.
    for (const local of await this.networks.list()) {
      if (!all.some((n) => n.name === local.name)) await this.networks.remove(local.name);
    }
    const nets = all.filter((n) => n.kind === 'vxlan');
    if (!nets.length) return;
    const hosts = this.o.state.hosts.list();
    const me = hosts.find((h) => h.name === this.o.hostName);
    if (!me) return;
    const addrOf = (h: HostRecord): string => new URL(h.apiUrl).hostname.replace(/^\[|\]$/g, '');
    const vms = this.o.state.vms.records();
    for (const n of nets) {
      const slot = await this.o.state.catalog.hostSlot(n.name, this.o.hostName, HOST_SLOTS);
      if (slot === undefined) throw new FdError('FD_NET_FULL', `network ${n.name} has no free host address`);
      const leases = vms.flatMap((v) =>
        v.nics.filter((x) => x.network === n.name && x.ip).map((x) => ({ mac: x.mac, ip: x.ip! })),
      );
      await this.networks.ensure({
        name: n.name,
        bridge: n.bridge!,
        subnet: n.cidr!,
        address: intToIp(cidrRange(n.cidr!).base + slot),
        nat: true,
        dhcp: true,
        staticLeases: leases,
        vxlan: { vni: n.vni!, local: addrOf(me), peers: hosts.filter((h) => h.name !== me.name).map(addrOf) },
      });
      // ensure() leaves a running dnsmasq alone: make it reread the bindings.
      await this.networks.setStaticLeases(n.name, leases);
    }
  }

  /** A fixed address for a NIC on a cluster (VXLAN) network; null on other networks. */
  async allocateAddress(network: string, vmId: string): Promise<string | null> {
    const net = this.o.state.catalog.findNetwork(network);
    if (!net || net.kind !== 'vxlan' || !net.cidr) return null;
    const { base, size } = cidrRange(net.cidr);
    const candidates = function* (): Generator<string> {
      for (let i = FIRST_VM_ADDRESS; i < size - 1; i++) yield intToIp(base + i);
    };
    const ip = await this.o.state.catalog.takeAddress(network, vmId, candidates());
    if (!ip)
      throw new FdError('FD_NET_FULL', `network ${network} has no free address`, {
        hint: 'delete VMs on it, or use a larger subnet',
      });
    return ip;
  }

  releaseAddresses(vmId: string): Promise<void> {
    return this.o.state.catalog.releaseAddresses(vmId);
  }
}

function cidrRange(cidr: string): { base: number; size: number } {
  const [addr, bits] = cidr.split('/');
  const p = addr!.split('.').map(Number);
  const prefix = Number(bits);
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const base = ((((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0) & mask) >>> 0;
  return { base, size: 2 ** (32 - prefix) };
}

const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
