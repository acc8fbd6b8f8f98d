/**
 * What the host firewall enforces around a VM's NICs: security groups (named rule lists shared
 * by many NICs), rules per NIC, a default policy per direction, and anti-spoofing. This module
 * holds the shapes and their validation; compile.ts turns a validated FirewallState into one
 * nftables transaction and engine.ts applies it. Directions are the VM's view: `in` is traffic
 * to the VM, `out` traffic from it. A port is always the destination port (the service).
 */
import { FdError } from '../../core/errors.js';
import { NAME_RE } from '../../core/ids.js';
import { parseCidr, type Cidr } from './addresses.js';

export type Direction = 'in' | 'out';
export type Action = 'accept' | 'drop' | 'reject';
export type Proto = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'any';

export type Peer =
  { kind: 'cidr'; cidr: string } | { kind: 'group'; group: string } | { kind: 'network'; network: string };

export interface FirewallRule {
  /** Stable id ([a-z0-9]{1,16}): names the rule's counter, so counters survive other changes. */
  id: string;
  direction: Direction;
  action: Action;
  proto: Proto;
  /** Destination port or range; tcp and udp only. */
  ports?: { from: number; to: number };
  /** Who is on the other end; without it, anyone. */
  peer?: Peer;
  /** Log matches (rate-limited) before the verdict. */
  log?: boolean;
  comment?: string;
}

export interface SecurityGroup {
  name: string;
  rules: FirewallRule[];
}

export interface NicFirewall {
  /** VM name and NIC id: in counters, log prefixes and error messages. */
  vm: string;
  nic: string;
  /** The NIC's tap on this host (tap.ts names it). */
  tap: string;
  bridge: string;
  mac: string;
  /** Addresses the NIC may use (IPv4 and IPv6; its EUI-64 link-local is always allowed). */
  addresses: string[];
  /** Groups whose rules apply, in order, after the NIC's own rules. */
  groups: string[];
  rules: FirewallRule[];
  defaultIn: Action;
  defaultOut: Action;
  /** Own MAC and addresses only, ARP and NDP checked, no DHCP or router answers (default on). */
  antiSpoof: boolean;
  /** Log (rate-limited) what the default policies and anti-spoofing drop. */
  logDrops: boolean;
}

export interface FirewallState {
  groups: SecurityGroup[];
  /** Current addresses of each group's members (for `peer: @group`). */
  groupMembers: Record<string, string[]>;
  /** CIDRs of each network (for `peer: network`). */
  networks: Record<string, string[]>;
  nics: NicFirewall[];
  /**
   * Addresses the host itself talks to (cluster hosts, etcd, its own bridge addresses): no NIC
   * may claim them, since traffic to a NIC's address is filtered by that NIC's rules.
   */
  protectedAddresses: string[];
}

const RULE_ID_RE = /^[a-z0-9]{1,16}$/;
const TAP_RE = /^[a-zA-Z0-9_.-]{1,15}$/;
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const ACTIONS = new Set<Action>(['accept', 'drop', 'reject']);
const PROTOS = new Set<Proto>(['tcp', 'udp', 'icmp', 'icmpv6', 'any']);

function bad(message: string, hint?: string): FdError {
  return new FdError('FD_FW_BAD_RULE', message, hint ? { hint } : {});
}

/** Parses `80` or `80-90` (1-65535). */
export function parsePortRange(text: string): { from: number; to: number } {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const from = m ? Number(m[1]) : NaN;
  const to = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || from < 1 || to > 65535 || from > to)
    throw bad(`"${text}" is not a port or range`, 'give a port like 80 or a range like 8000-8080 (1-65535)');
  return { from, to };
}

/** Parses a `--peer` argument: a CIDR or address, `@GROUP`, or `net:NAME`. */
export function parsePeer(text: string): Peer {
  if (text.startsWith('@')) return { kind: 'group', group: text.slice(1) };
  if (text.startsWith('net:')) return { kind: 'network', network: text.slice(4) };
  parseCidr(text);
  return { kind: 'cidr', cidr: text };
}

export function checkRule(rule: FirewallRule, where: string): void {
  if (!RULE_ID_RE.test(rule.id)) throw bad(`${where}: rule id "${rule.id}" is not 1-16 of a-z, 0-9`);
  if (rule.direction !== 'in' && rule.direction !== 'out') throw bad(`${where}: direction must be in or out`);
  if (!ACTIONS.has(rule.action)) throw bad(`${where}: action must be accept, drop or reject`);
  if (!PROTOS.has(rule.proto)) throw bad(`${where}: proto must be tcp, udp, icmp, icmpv6 or any`);
  if (rule.ports) {
    if (rule.proto !== 'tcp' && rule.proto !== 'udp')
      throw bad(`${where}: ports need --proto tcp or udp`, 'drop --port, or give --proto tcp|udp');
    const { from, to } = rule.ports;
    if (!Number.isInteger(from) || !Number.isInteger(to) || from < 1 || to > 65535 || from > to)
      throw bad(`${where}: port range ${from}-${to} is not within 1-65535`);
  }
  if (rule.peer?.kind === 'cidr') {
    const c = parseCidr(rule.peer.cidr);
    if ((rule.proto === 'icmp' && c.family === 6) || (rule.proto === 'icmpv6' && c.family === 4))
      throw bad(`${where}: ${rule.proto} cannot come from ${rule.peer.cidr}`);
  }
  if (rule.comment !== undefined && (rule.comment.length > 200 || /["\\\n\r]/.test(rule.comment)))
    throw bad(`${where}: a comment is at most 200 characters, without quotes, backslashes or newlines`);
}

/**
 * Checks a whole state: every rule, every group and network a rule or NIC names, NIC identity,
 * and that no NIC claims an address the host itself uses. Throws the first problem.
 */
export function checkState(s: FirewallState): void {
  const groups = new Map<string, SecurityGroup>();
  for (const g of s.groups) {
    if (!NAME_RE.test(g.name)) throw new FdError('FD_BAD_NAME', `group name "${g.name.slice(0, 80)}" is not allowed`);
    if (groups.has(g.name)) throw bad(`group ${g.name} is defined twice`);
    groups.set(g.name, g);
    const ids = new Set<string>();
    for (const r of g.rules) {
      checkRule(r, `group ${g.name}`);
      if (ids.has(r.id)) throw bad(`group ${g.name}: rule id ${r.id} is used twice`);
      ids.add(r.id);
    }
  }
  const checkPeer = (r: FirewallRule, where: string): void => {
    if (r.peer?.kind === 'group' && !groups.has(r.peer.group))
      throw new FdError('FD_FW_UNKNOWN_GROUP', `${where}: rule ${r.id} names unknown group @${r.peer.group}`, {
        hint: 'create the group first: flightdeck firewall group create NAME',
      });
    if (r.peer?.kind === 'network' && !s.networks[r.peer.network])
      throw new FdError('FD_FW_UNKNOWN_NETWORK', `${where}: rule ${r.id} names unknown network ${r.peer.network}`);
  };
  for (const g of s.groups) for (const r of g.rules) checkPeer(r, `group ${g.name}`);
  const protectedSet = new Set(s.protectedAddresses.map((a) => parseCidr(a).text));
  const taps = new Set<string>();
  const owners = new Map<string, string>();
  for (const n of s.nics) {
    const where = `${n.vm}/${n.nic}`;
    if (!TAP_RE.test(n.tap) || !TAP_RE.test(n.bridge)) throw bad(`${where}: bad interface name`);
    if (taps.has(n.tap)) throw bad(`${where}: tap ${n.tap} appears twice`);
    taps.add(n.tap);
    if (!MAC_RE.test(n.mac)) throw bad(`${where}: MAC ${n.mac} is not like 52:54:00:12:34:56 (lower case)`);
    if (!ACTIONS.has(n.defaultIn) || !ACTIONS.has(n.defaultOut))
      throw bad(`${where}: default policies must be accept, drop or reject`);
    for (const g of n.groups)
      if (!groups.has(g))
        throw new FdError('FD_FW_UNKNOWN_GROUP', `${where}: unknown security group ${g}`, {
          hint: 'create it first: flightdeck firewall group create NAME',
        });
    const ids = new Set<string>();
    for (const r of n.rules) {
      checkRule(r, where);
      checkPeer(r, where);
      if (ids.has(r.id)) throw bad(`${where}: rule id ${r.id} is used twice`);
      ids.add(r.id);
    }
    for (const a of n.addresses) {
      const c: Cidr = parseCidr(a);
      if (c.bits !== (c.family === 4 ? 32 : 128)) throw bad(`${where}: NIC address ${a} must be a single address`);
      if (protectedSet.has(c.text))
        throw new FdError('FD_FW_CUTS_HOST', `${where}: address ${a} belongs to the host's own traffic`, {
          hint: "traffic to a NIC's address passes that NIC's rules; give the NIC another address",
        });
      const other = owners.get(c.text);
      if (other && other !== where) throw bad(`${where}: address ${a} is already ${other}'s`);
      owners.set(c.text, where);
    }
  }
}
