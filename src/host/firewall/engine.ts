/**
 * Applies a host's firewall state: every change is one `nft -f` transaction that flushes our
 * two tables and writes them anew (so a packet sees the old rules or the new ones, never a mix),
 * keeping the named counters of rules that stay. Changes are serialized within the process.
 * The bridges of filtered NICs get nf_call_iptables/ip6tables, so their bridged IP traffic
 * reaches the inet hooks even where the host-wide sysctl is off.
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../../core/atomic-file.js';
import { FdError } from '../../core/errors.js';
import { run, tail } from '../../core/process.js';
import { compile, type CounterRef } from './compile.js';
import { checkState, type FirewallState } from './model.js';

export const DEFAULT_FW_TABLE = 'flightdeck_fw';

export interface RuleCounter {
  source: 'nic' | 'group';
  group?: string;
  ruleId: string;
  packets: number;
  bytes: number;
}

export interface NicCounters {
  tap: string;
  rules: RuleCounter[];
  defaultIn: { packets: number; bytes: number };
  defaultOut: { packets: number; bytes: number };
  /** Frames dropped by anti-spoofing. */
  spoof: { packets: number; bytes: number };
}

interface NftObject {
  chain?: { name: string; family: string; table: string };
  counter?: { name: string; family: string; table: string; packets: number; bytes: number };
}

export class HostFirewall {
  readonly table: string;
  private queue: Promise<unknown> = Promise.resolve();
  private refs: CounterRef[] = [];

  constructor(private readonly opts: { stateDir: string; table?: string }) {
    this.table = opts.table ?? DEFAULT_FW_TABLE;
    if (!/^[a-z][a-z0-9_]{0,30}$/.test(this.table)) throw new Error(`bad firewall table name ${this.table}`);
  }

  /** Validates `state` (nothing changes when it is refused) and puts it in force atomically. */
  async apply(state: FirewallState): Promise<void> {
    checkState(state);
    const next = this.queue.then(() => this.applyNow(state));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async applyNow(state: FirewallState): Promise<void> {
    const c = compile(state, this.table);
    const live = await this.liveObjects();
    const wantCounters = new Set(c.counters.map((x) => `${x.table} ${x.name}`));
    const wantChains = new Set([
      ...c.chains.inet.map((n) => `inet ${n}`),
      ...c.chains.bridge.map((n) => `bridge ${n}`),
    ]);
    const t = this.table;
    const lines = [`add table inet ${t}`, `add table bridge ${t}`, `flush table inet ${t}`, `flush table bridge ${t}`];
    for (const ch of live.chains) if (!wantChains.has(ch)) lines.push(`delete chain ${ch.replace(' ', ` ${t} `)}`);
    const drop = live.counters.filter((k) => !wantCounters.has(k));
    const script = [
      ...lines,
      c.body,
      ...drop.map((k) => `delete counter ${k.split(' ')[0]} ${t} ${k.slice(k.indexOf(' ') + 1)}`),
    ].join('\n');
    for (const br of new Set(state.nics.map((n) => n.bridge))) {
      await run('ip', ['link', 'set', 'dev', br, 'type', 'bridge', 'nf_call_iptables', '1', 'nf_call_ip6tables', '1']);
    }
    const r = await run('nft', ['-f', '-'], { input: script + '\n', allowFail: true });
    if (r.code !== 0)
      throw new FdError('FD_FW_APPLY_FAILED', `nftables refused the firewall: ${tail(r.stderr, 6)}`, {
        hint: 'nothing changed; this is a bug in the rule compiler if the rules were accepted',
      });
    this.refs = c.counters;
    await writeFileAtomic(join(this.opts.stateDir, 'firewall.json'), JSON.stringify(state, null, 2) + '\n');
  }

  private async liveObjects(): Promise<{ chains: string[]; counters: string[] }> {
    const chains: string[] = [];
    const counters: string[] = [];
    for (const fam of ['inet', 'bridge']) {
      const r = await run('nft', ['-j', 'list', 'table', fam, this.table], { allowFail: true });
      if (r.code !== 0) continue; // not there yet
      for (const o of (JSON.parse(r.stdout) as { nftables: NftObject[] }).nftables) {
        if (o.chain) chains.push(`${fam} ${o.chain.name}`);
        if (o.counter) counters.push(`${fam} ${o.counter.name}`);
      }
    }
    return { chains, counters };
  }

  /** Counters per NIC as nftables has them now (after `apply`). */
  async counters(): Promise<NicCounters[]> {
    const values = new Map<string, { packets: number; bytes: number }>();
    for (const fam of ['inet', 'bridge']) {
      const r = await run('nft', ['-j', 'list', 'counters', 'table', fam, this.table], { allowFail: true });
      if (r.code !== 0) continue;
      for (const o of (JSON.parse(r.stdout) as { nftables: NftObject[] }).nftables)
        if (o.counter) values.set(`${fam} ${o.counter.name}`, { packets: o.counter.packets, bytes: o.counter.bytes });
    }
    const zero = { packets: 0, bytes: 0 };
    const byTap = new Map<string, NicCounters>();
    for (const ref of this.refs) {
      let n = byTap.get(ref.tap);
      if (!n) {
        n = { tap: ref.tap, rules: [], defaultIn: zero, defaultOut: zero, spoof: zero };
        byTap.set(ref.tap, n);
      }
      const v = values.get(`${ref.table} ${ref.name}`) ?? zero;
      if (ref.kind === 'default-in') n.defaultIn = v;
      else if (ref.kind === 'default-out') n.defaultOut = v;
      else if (ref.kind === 'spoof') n.spoof = v;
      else n.rules.push({ source: ref.kind, ...(ref.group ? { group: ref.group } : {}), ruleId: ref.ruleId!, ...v });
    }
    return [...byTap.values()];
  }

  /** Removes both tables (nothing filtered any more). */
  async clear(): Promise<void> {
    const next = this.queue.then(async () => {
      for (const fam of ['inet', 'bridge']) await run('nft', ['delete', 'table', fam, this.table], { allowFail: true });
      this.refs = [];
    });
    this.queue = next.catch(() => undefined);
    return next;
  }
}
