/**
 * The lab's network: one bridge in the root namespace (which keeps the gateway address so the
 * CLI outside reaches every host), one namespace per host joined to it by a veth pair, and an
 * nft table that keeps lab traffic inside the lab: hosts have no route beyond the subnet, the
 * root namespace forwards nothing into or out of the bridge and accepts from it only replies
 * to connections it opened itself. A partition is an nft table inside the host's namespace
 * that drops everything but loopback, so its processes keep running, cut off.
 */
import { run } from '../core/process.js';
import {
  bridgeName,
  gatewayIp,
  HOST_IFACE,
  hostIp,
  isolationTable,
  linkPrefix,
  netnsPrefix,
  PARTITION_TABLE,
  vethName,
  type Subnet,
} from './names.js';

const ip = (args: string[]): Promise<unknown> => run('ip', args);

export async function createBridge(prefix: string, subnet: Subnet): Promise<void> {
  const br = bridgeName(prefix);
  await ip(['link', 'add', br, 'type', 'bridge']);
  await ip(['addr', 'add', `${gatewayIp(subnet)}/24`, 'dev', br]);
  await ip(['link', 'set', br, 'up']);
  // Bridged traffic between two hosts has the bridge as both input and output (also when
  // br_netfilter hands it to these hooks); only traffic crossing the bridge's edge is dropped.
  const rules = `table inet ${isolationTable(prefix)} {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "${br}" ct state established,related accept
    iifname "${br}" drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "${br}" oifname != "${br}" drop
    oifname "${br}" iifname != "${br}" drop
  }
}
`;
  await run('nft', ['-f', '-'], { input: rules });
}

export async function createHostNetwork(prefix: string, index: number, netns: string, subnet: Subnet): Promise<void> {
  const veth = vethName(prefix, index);
  await ip(['netns', 'add', netns]);
  await ip(['link', 'add', veth, 'type', 'veth', 'peer', 'name', HOST_IFACE, 'netns', netns]);
  await ip(['link', 'set', veth, 'master', bridgeName(prefix), 'up']);
  await ip(['-n', netns, 'link', 'set', 'lo', 'up']);
  await ip(['-n', netns, 'addr', 'add', `${hostIp(subnet, index)}/24`, 'dev', HOST_IFACE]);
  await ip(['-n', netns, 'link', 'set', HOST_IFACE, 'up']);
}

export async function partition(netns: string): Promise<void> {
  await unpartition(netns);
  const rules = `table inet ${PARTITION_TABLE} {
  chain input { type filter hook input priority -10; policy drop; iif "lo" accept; }
  chain output { type filter hook output priority -10; policy drop; oif "lo" accept; }
}
`;
  await run('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { input: rules });
}

export async function unpartition(netns: string): Promise<void> {
  await run('ip', ['netns', 'exec', netns, 'nft', 'delete', 'table', 'inet', PARTITION_TABLE], { allowFail: true });
}

export async function isPartitioned(netns: string): Promise<boolean> {
  const r = await run('ip', ['netns', 'exec', netns, 'nft', 'list', 'table', 'inet', PARTITION_TABLE], {
    allowFail: true,
  });
  return r.code === 0;
}

/** Namespaces of this lab that exist now (found by name, whatever the state file says). */
export async function labNamespaces(prefix: string): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => n.startsWith(netnsPrefix(prefix)));
}

/** Links in the root namespace of this lab (the bridge and the root ends of the veths). */
export async function labLinks(prefix: string): Promise<string[]> {
  const r = await run('ip', ['-o', 'link', 'show']);
  const names = r.stdout.split('\n').map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1]);
  return names.filter((n): n is string => n !== undefined && n.startsWith(linkPrefix(prefix)));
}

export async function hasIsolationTable(prefix: string): Promise<boolean> {
  const r = await run('nft', ['list', 'table', 'inet', isolationTable(prefix)], { allowFail: true });
  return r.code === 0;
}

export async function netnsExists(netns: string): Promise<boolean> {
  return (await run('ip', ['netns', 'list'])).stdout.split('\n').some((l) => l.split(' ')[0] === netns);
}

/**
 * Removes namespaces, links and the nft table of a lab; each step tolerates the piece being
 * gone already, so this finishes what a crashed `up` or `down` left. Processes must be gone
 * first: a namespace with live processes outlives `ip netns del`.
 */
export async function removeLabNetwork(prefix: string): Promise<{ namespaces: string[]; links: string[] }> {
  const namespaces = await labNamespaces(prefix);
  for (const ns of namespaces) await run('ip', ['netns', 'del', ns], { allowFail: true });
  const links = await labLinks(prefix);
  // Veths first: deleting one end removes both; the bridge goes last.
  for (const l of links.sort((a, b) => Number(a === bridgeName(prefix)) - Number(b === bridgeName(prefix))))
    await run('ip', ['link', 'del', l], { allowFail: true });
  await run('nft', ['delete', 'table', 'inet', isolationTable(prefix)], { allowFail: true });
  return { namespaces, links };
}

/**
 * True when no route or address of the root namespace (apart from the default route) covers any
 * part of `cidr`: a lab there would shadow, or be shadowed by, a network this machine already uses.
 */
export { subnetFree } from '../host/network-choice.js';
