/**
 * IPv4/IPv6 addresses and prefixes as the firewall needs them: parsed and normalized (so the
 * same address written two ways is one address), the EUI-64 link-local address of a MAC (what
 * a guest's kernel derives by default), and the 128-bit hex form nftables' raw payload match
 * takes for an NDP target.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { FdError } from '../../core/errors.js';

export interface Cidr {
  family: 4 | 6;
  /** Address bytes (4 or 16), host bits cleared. */
  bytes: Buffer;
  bits: number;
  /** Normalized text: `10.0.0.0/24`, `fd00::/64`, a single address without the suffix. */
  text: string;
}

function badCidr(text: string): FdError {
  return new FdError('FD_FW_BAD_ADDRESS', `"${text.slice(0, 80)}" is not an IPv4 or IPv6 address or prefix`, {
    hint: 'give an address like 10.0.0.5, 2001:db8::5, or a prefix like 10.0.0.0/24',
  });
}

function v6Bytes(text: string): Buffer {
  const out = Buffer.alloc(16);
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const parse = (part: string | undefined): number[] =>
    part ? part.split(':').flatMap((g) => (g.includes('.') ? v4Groups(g) : [parseInt(g, 16)])) : [];
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function v4Groups(dotted: string): number[] {
  const b = dotted.split('.').map(Number);
  return [(b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!];
}

function formatV6(b: Buffer): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  // the longest run of zero groups (two or more) becomes "::"
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

export function parseCidr(text: string): Cidr {
  const [addr, len, extra] = text.split('/');
  if (extra !== undefined || !addr) throw badCidr(text);
  const family = isIPv4(addr) ? 4 : isIPv6(addr) && !addr.includes('%') ? 6 : 0;
  if (!family) throw badCidr(text);
  const max = family === 4 ? 32 : 128;
  if (len !== undefined && !/^\d{1,3}$/.test(len)) throw badCidr(text);
  const bits = len === undefined ? max : Number(len);
  if (bits > max) throw badCidr(text);
  const bytes = family === 4 ? Buffer.from(addr.split('.').map(Number)) : v6Bytes(addr);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] = bytes[i]! & ((0xff << (8 - keep)) & 0xff);
  }
  const a = family === 4 ? [...bytes].join('.') : formatV6(bytes);
  return { family, bytes, bits, text: bits === max ? a : `${a}/${bits}` };
}

/** The fe80::/64 address a kernel derives from a MAC by EUI-64 (U/L bit flipped, ff:fe inside). */
export function linkLocalFromMac(mac: string): string {
  const m = mac.split(':').map((x) => parseInt(x, 16));
  const b = Buffer.alloc(16);
  b[0] = 0xfe;
  b[1] = 0x80;
  b.set([m[0]! ^ 0x02, m[1]!, m[2]!, 0xff, 0xfe, m[3]!, m[4]!, m[5]!], 8);
  return formatV6(b);
}

/** `0x` + 32 hex digits: an IPv6 address as nftables' raw 128-bit payload match wants it. */
export function v6Hex(addr: string): string {
  return '0x' + parseCidr(addr).bytes.toString('hex');
}

/** Splits addresses or prefixes by family, normalized and without duplicates. */
export function byFamily(list: string[]): { v4: string[]; v6: string[] } {
  const v4 = new Set<string>();
  const v6 = new Set<string>();
  for (const a of list) {
    const c = parseCidr(a);
    (c.family === 4 ? v4 : v6).add(c.text);
  }
  return { v4: [...v4].sort(), v6: [...v6].sort() };
}
