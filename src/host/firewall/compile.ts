/**
 * FirewallState -> nftables, in two tables of our own (both named by the caller):
 *
 * - `bridge T`: frames as the bridge sees them. prerouting (priority -300, before
 *   br_netfilter) jumps per tap to the NIC's port chain: it marks the packet with the NIC's
 *   index (mark bits 16-31) and, with anti-spoofing on, drops frames with another source MAC,
 *   other ether types, ARP or IPv4/IPv6 sources that are not the NIC's, NDP advertisements for
 *   other targets, router advertisements and DHCP server answers. forward (priority -200, before
 *   br_netfilter hands bridged IP to the inet hooks) marks the out port (bits 0-15).
 * - `inet T`: the rules, with connection tracking (this kernel has no conntrack in the bridge
 *   family, so the rules live where br_netfilter gives bridged IP packets to the IP hooks).
 *   forward/input dispatch on the marks to the NIC's `out` chain (from the VM) and `in` chain
 *   (to the VM); what the host itself sends, and routed traffic whose out port is not known yet,
 *   reaches the `in` chain by destination address. Established and related packets pass first.
 *   An accepted packet `return`s from a NIC's chain, so a packet between two of our VMs passes
 *   the sender's out rules and then the receiver's in rules.
 *
 * Counters are named objects (`<tap>.r.<id>`, `<tap>.g.<group>.<id>`, `<tap>.default-in|out`,
 * `<tap>.spoof`): the engine replaces every rule in one transaction and keeps the counters.
 * Nothing here matches a packet that did not come from or go to a NIC's tap or address.
 */
import { byFamily, linkLocalFromMac, parseCidr, v6Hex } from './addresses.js';
import type { Action, FirewallRule, FirewallState, NicFirewall } from './model.js';

export interface CounterRef {
  table: 'inet' | 'bridge';
  name: string;
  tap: string;
  /** `nic` for the NIC's own rules, `group` for a group's, `default-in|out`, `spoof`. */
  kind: 'nic' | 'group' | 'default-in' | 'default-out' | 'spoof';
  group?: string;
  ruleId?: string;
}

export interface Compiled {
  /** Table bodies (`table inet T { ... }` and `table bridge T { ... }`). */
  body: string;
  chains: { inet: string[]; bridge: string[] };
  counters: CounterRef[];
}

const LOG_LIMIT = 'limit rate 5/second burst 10 packets';
const ALWAYS_OUT = [
  'udp sport 68 udp dport 67 return', // DHCPv4 client
  'udp sport 546 udp dport 547 return', // DHCPv6 client
  'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, mld-listener-report, mld2-listener-report } return',
];
const ALWAYS_IN = [
  'udp sport 67 udp dport 68 return',
  'udp sport 547 udp dport 546 return',
  'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, mld-listener-query } return',
];

const hex8 = (n: number): string => '0x' + (n >>> 0).toString(16).padStart(8, '0');
const q = (s: string): string => `"${s}"`;
const set = (xs: string[]): string => (xs.length === 1 ? xs[0]! : `{ ${xs.join(', ')} }`);

function verdict(a: Action, tcpOnly: boolean): string[] {
  if (a === 'accept') return ['return'];
  if (a === 'drop') return ['drop'];
  return tcpOnly ? ['reject with tcp reset'] : ['reject with icmpx type admin-prohibited'];
}

/** Lines of `match` ending in the counter and verdict, with a rate-limited log line first. */
function terminal(match: string, counter: string, action: Action, proto: string, log: string | undefined): string[] {
  const m = match ? match + ' ' : '';
  const out: string[] = [];
  if (log) out.push(`${m}${LOG_LIMIT} log prefix ${q(log)} level info`);
  if (action === 'reject' && proto === 'any') {
    out.push(`${m}meta l4proto tcp counter name ${counter} reject with tcp reset`);
    out.push(`${m}counter name ${counter} reject with icmpx type admin-prohibited`);
  } else for (const v of verdict(action, proto === 'tcp')) out.push(`${m}counter name ${counter} ${v}`);
  return out;
}

function peerAddresses(r: FirewallRule, s: FirewallState): string[] | undefined {
  if (!r.peer) return undefined;
  if (r.peer.kind === 'cidr') return [r.peer.cidr];
  if (r.peer.kind === 'group') return s.groupMembers[r.peer.group] ?? [];
  return s.networks[r.peer.network] ?? [];
}

function ruleLines(n: NicFirewall, r: FirewallRule, counter: string, s: FirewallState): string[] {
  const proto = r.proto === 'icmpv6' ? 'ipv6-icmp' : r.proto;
  const base = [
    ...(r.proto === 'any' ? [] : [`meta l4proto ${proto}`]),
    ...(r.ports ? [`th dport ${r.ports.from === r.ports.to ? r.ports.from : `${r.ports.from}-${r.ports.to}`}`] : []),
  ];
  const log = r.log ? `fdfw ${n.vm}/${n.nic} ${r.id} ${r.action} ` : undefined;
  const peers = peerAddresses(r, s);
  if (!peers) return terminal(base.join(' '), counter, r.action, r.proto, log);
  const { v4, v6 } = byFamily(peers);
  const side = r.direction === 'in' ? 'saddr' : 'daddr';
  const out: string[] = [];
  if (v4.length && r.proto !== 'icmpv6')
    out.push(...terminal([`ip ${side} ${set(v4)}`, ...base].join(' '), counter, r.action, r.proto, log));
  if (v6.length && r.proto !== 'icmp')
    out.push(...terminal([`ip6 ${side} ${set(v6)}`, ...base].join(' '), counter, r.action, r.proto, log));
  return out; // a peer group without members matches nothing
}

function antiSpoofLines(n: NicFirewall, counter: string): string[] {
  const log = n.logDrops ? `fdfw ${n.vm}/${n.nic} spoof ` : undefined;
  const drop = (match: string): string[] => terminal(match, counter, 'drop', 'any', log);
  const { v4, v6 } = byFamily(n.addresses);
  const ll = parseCidr(linkLocalFromMac(n.mac)).text;
  const own6 = [...new Set([ll, ...v6])].sort();
  return [
    ...drop(`ether saddr != ${n.mac}`),
    ...drop('ether type != { ip, ip6, arp }'),
    ...drop(`arp saddr ether != ${n.mac}`),
    ...drop(`arp saddr ip != ${set([...v4, '0.0.0.0'])}`),
    ...drop('udp sport { 67, 547 }'),
    ...drop('icmpv6 type { nd-router-advert, nd-redirect }'),
    'ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return',
    ...drop(v4.length ? `ip saddr != ${set(v4)}` : 'ether type ip'),
    'ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report, mld2-listener-report } return',
    ...drop(`ip6 saddr != ${set(own6)}`),
    ...drop(`icmpv6 type nd-neighbor-advert @th,64,128 != ${set(own6.map(v6Hex))}`),
  ];
}

export function compile(s: FirewallState, table: string): Compiled {
  const nics = [...s.nics].sort((a, b) => (a.tap < b.tap ? -1 : 1));
  const groups = new Map(s.groups.map((g) => [g.name, g]));
  const counters: CounterRef[] = [];
  const inet: string[] = [];
  const bridge: string[] = [];
  const chains = { inet: ['forward', 'input', 'output'], bridge: ['prerouting', 'forward'] };
  const outMap: string[] = [];
  const inMap: string[] = [];
  const addr4Map: string[] = [];
  const addr6Map: string[] = [];
  const portMap: string[] = [];
  const oportMap: string[] = [];

  nics.forEach((n, i) => {
    const idx = i + 1;
    const c = (suffix: string, ref: Omit<CounterRef, 'name' | 'tap' | 'table'>, t: 'inet' | 'bridge' = 'inet') => {
      const name = `${n.tap}.${suffix}`;
      counters.push({ table: t, name, tap: n.tap, ...ref });
      return name;
    };
    const chain = (dir: 'in' | 'out'): string[] => {
      const lines = ['ct state invalid drop', ...(dir === 'in' ? ALWAYS_IN : ALWAYS_OUT)];
      for (const r of n.rules.filter((x) => x.direction === dir))
        lines.push(...ruleLines(n, r, c(`r.${r.id}`, { kind: 'nic', ruleId: r.id }), s));
      for (const g of n.groups)
        for (const r of groups.get(g)!.rules.filter((x) => x.direction === dir))
          lines.push(...ruleLines(n, r, c(`g.${g}.${r.id}`, { kind: 'group', group: g, ruleId: r.id }), s));
      const def = dir === 'in' ? n.defaultIn : n.defaultOut;
      const log = n.logDrops && def !== 'accept' ? `fdfw ${n.vm}/${n.nic} default-${dir} ` : undefined;
      lines.push(...terminal('', c(`default-${dir}`, { kind: `default-${dir}` }), def, 'any', log));
      return lines;
    };
    inet.push(block(`n${idx}_out`, chain('out')), block(`n${idx}_in`, chain('in')));
    chains.inet.push(`n${idx}_out`, `n${idx}_in`);
    outMap.push(`${hex8(idx << 16)} : jump n${idx}_out`);
    inMap.push(`${hex8(idx)} : jump n${idx}_in`);
    const { v4, v6 } = byFamily(n.addresses);
    for (const a of v4) addr4Map.push(`${a} : jump n${idx}_in`);
    for (const a of v6) addr6Map.push(`${a} : jump n${idx}_in`);

    const port = [`meta mark set meta mark & 0x0000ffff | ${hex8(idx << 16)}`];
    if (n.antiSpoof) port.push(...antiSpoofLines(n, c('spoof', { kind: 'spoof' }, 'bridge')));
    bridge.push(block(`p${idx}`, port), block(`o${idx}`, [`meta mark set meta mark & 0xffff0000 | ${hex8(idx)}`]));
    chains.bridge.push(`p${idx}`, `o${idx}`);
    portMap.push(`${q(n.tap)} : jump p${idx}`);
    oportMap.push(`${q(n.tap)} : jump o${idx}`);
  });

  const vmap = (key: string, entries: string[]): string[] =>
    entries.length ? [`${key} vmap { ${entries.join(', ')} }`] : [];
  const hook = (h: string, prio: string, lines: string[]): string =>
    block(h, [`type filter hook ${h} priority ${prio}; policy accept;`, ...lines]);
  const established = 'ct state established,related accept';
  const unknownOut = 'meta mark & 0x0000ffff == 0';
  const inetBody = [
    hook('forward', 'filter', [
      established,
      ...vmap('meta mark & 0xffff0000', outMap),
      ...vmap('meta mark & 0x0000ffff', inMap),
      ...vmap(`${unknownOut} ip daddr`, addr4Map),
      ...vmap(`${unknownOut} ip6 daddr`, addr6Map),
    ]),
    hook('input', 'filter', [established, ...vmap('meta mark & 0xffff0000', outMap)]),
    hook('output', 'filter', [established, ...vmap('ip daddr', addr4Map), ...vmap('ip6 daddr', addr6Map)]),
    ...inet,
  ];
  const bridgeBody = [
    hook('prerouting', '-300', vmap('iifname', portMap)),
    hook('forward', '-200', vmap('oifname', oportMap)),
    ...bridge,
  ];
  const decl = (t: 'inet' | 'bridge'): string[] =>
    counters.filter((x) => x.table === t).map((x) => `counter ${x.name} {}`);
  const body = [
    `table inet ${table} {`,
    ...decl('inet').map(indent),
    ...inetBody.map(indent),
    '}',
    `table bridge ${table} {`,
    ...decl('bridge').map(indent),
    ...bridgeBody.map(indent),
    '}',
  ].join('\n');
  return { body: body + '\n', chains, counters };
}

function block(name: string, lines: string[]): string {
  return [`chain ${name} {`, ...lines.map((l) => `\t${l}`), '}'].join('\n');
}

const indent = (text: string): string =>
  text
    .split('\n')
    .map((l) => `\t${l}`)
    .join('\n');
