/**
 * The audit log: who changed what, from where, and how it went. One record per API call that
 * changes something (and per console opened), written by the host that answered, kept in etcd
 * under `audit/` (keys ordered by time, so the newest are listed first cheaply) and pruned to a
 * retention limit of age and count. Every record also goes to the daemon's log as a JSON line,
 * so nothing is lost when the store is out of reach.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../core/log.js';
import type { Store } from './store.js';

export interface AuditActor {
  tokenId: string | null;
  tokenName: string | null;
  role: string | null;
}

export interface AuditEntry extends AuditActor {
  id: string;
  at: string;
  /** The host that answered the call. */
  host: string;
  /** The client's address as this host saw it (for a relayed call: the relaying host). */
  source: string;
  /** The host that relayed the call here, when it came through another host. */
  relayedBy?: string;
  /** The operation's name (vm.start, token.create...), or METHOD /route for other routes. */
  operation: string;
  target: { kind: string; ref?: string; id?: string; name?: string } | null;
  result: { status: number; code?: string; task?: string };
}

export interface AuditFilter {
  /** A VM's id or name (records about it by either). */
  vm?: { id?: string; name: string };
  /** A token's id or name. */
  token?: string;
  sinceMs?: number;
  limit?: number;
}

export interface AuditRetention {
  maxAgeMs: number;
  maxEntries: number;
}

export const DEFAULT_RETENTION: AuditRetention = { maxAgeMs: 90 * 86_400_000, maxEntries: 20_000 };
const PREFIX = 'audit/';
const PRUNE_EVERY_MS = 10 * 60_000;

/** A key that sorts by time: 15 digits of ms since the epoch, then the host and a random part. */
const keyOf = (at: number, host: string): string =>
  `${PREFIX}${String(at).padStart(15, '0')}-${host}-${randomBytes(3).toString('hex')}`;
const timeOfKey = (key: string): number => Number(key.slice(PREFIX.length, PREFIX.length + 15));

export class AuditLog {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly host: string,
    private readonly log: Logger,
    private readonly retention: AuditRetention = DEFAULT_RETENTION,
  ) {}

  /** Records one entry: the daemon log at once, the store as well as it can. */
  async record(e: Omit<AuditEntry, 'id' | 'at' | 'host'>): Promise<AuditEntry> {
    const now = Date.now();
    const key = keyOf(now, this.host);
    const entry: AuditEntry = { id: key.slice(PREFIX.length), at: new Date(now).toISOString(), host: this.host, ...e };
    this.log.info('audit', { audit: entry });
    try {
      await this.store.put(key, entry);
    } catch (err) {
      this.log.error('audit record not stored (it is in this log)', { id: entry.id, err: String(err) });
    }
    return entry;
  }

  /** Newest first. */
  async list(f: AuditFilter = {}): Promise<AuditEntry[]> {
    const all = await this.store.list<AuditEntry>(PREFIX);
    const out: AuditEntry[] = [];
    const limit = f.limit ?? 100;
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      const e = all[i]!.value;
      if (f.sinceMs !== undefined && Date.parse(e.at) < f.sinceMs) break;
      if (f.token && e.tokenId !== f.token && e.tokenName !== f.token) continue;
      if (f.vm && !aboutVm(e, f.vm)) continue;
      out.push(e);
    }
    return out;
  }

  /** Drops records beyond the retention limit (every host does it; deletes are idempotent). */
  async prune(): Promise<number> {
    const all = await this.store.list<AuditEntry>(PREFIX);
    const cutoff = Date.now() - this.retention.maxAgeMs;
    const excess = all.length - this.retention.maxEntries;
    let removed = 0;
    for (let i = 0; i < all.length; i++) {
      const key = all[i]!.key;
      if (i >= excess && timeOfKey(key) >= cutoff) break;
      await this.store.remove(key);
      removed++;
    }
    return removed;
  }

  start(): void {
    const tick = (): void => {
      void this.prune().catch((err: unknown) => this.log.warn('audit prune failed', { err: String(err) }));
    };
    tick();
    this.timer = setInterval(tick, PRUNE_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

function aboutVm(e: AuditEntry, vm: { id?: string; name: string }): boolean {
  const t = e.target;
  if (!t || (t.kind !== 'vm' && t.kind !== 'vms')) return false;
  const names = [t.ref, t.id, t.name];
  return names.includes(vm.name) || (vm.id !== undefined && names.includes(vm.id));
}
