/**
 * A copy of the whole desired state in memory, fed by one watch of the store: a snapshot at a
 * revision, then every change after it, in revision order. Reads that tolerate being a few
 * milliseconds behind (lists, placement, admission, compiling a VM's spec, the API's views)
 * come from here and cost no round trip; every write still goes to the store as a
 * compare-and-swap, so a stale read can make a write fail and retry, never win wrongly.
 *
 * One watch over every key, not one per prefix: events of different kinds then arrive in the
 * order they happened (a disk's new path before the VM's new owner), so the copy is always a
 * state the store really was in.
 */
import type { Logger } from '../../core/log.js';
import { sleep } from '../../core/process.js';
import type { KvStore, StoreEvent, Versioned } from './kv.js';

type Listener = { prefix: string; fn: (e: StoreEvent<unknown>) => void };

const RESTART_DELAY_MS = 500;

export class StateCache {
  private readonly entries = new Map<string, Versioned<unknown>>();
  /** Keys in order, rebuilt lazily after a key appears or goes (not when a value changes). */
  private sorted: string[] | null = null;
  private rev = 0;
  private readonly listeners = new Set<Listener>();
  private readonly waiters = new Set<{ rev: number; resolve: () => void }>();
  private stopWatch: (() => Promise<void>) | undefined;
  private closed = false;

  constructor(
    private readonly store: KvStore,
    private readonly log: Logger,
  ) {}

  /** Loads the snapshot and follows the store from there; resolves once the copy is complete. */
  async start(): Promise<void> {
    const snap = await this.store.snapshot('');
    this.entries.clear();
    for (const kv of snap.kvs) this.entries.set(kv.key, kv);
    this.sorted = null;
    this.rev = Number(snap.rev);
    this.stopWatch = await this.store.watch('', (e) => this.apply(e), {
      fromRev: String(this.rev + 1),
      onLost: (err) => void this.restart(err),
    });
    this.wake();
  }

  /** The watch was cancelled (its revision compacted away): load a new snapshot. */
  private async restart(err: Error): Promise<void> {
    if (this.closed) return;
    this.log.warn('state cache watch lost; reloading', { err: String(err) });
    await this.stopWatch?.().catch(() => undefined);
    for (;;) {
      if (this.closed) return;
      try {
        const before = new Map(this.entries);
        await this.start();
        // Tell listeners what changed while the watch was down.
        for (const [key, kv] of this.entries) {
          const old = before.get(key);
          if (!old || old.rev !== kv.rev) this.emit({ type: 'put', key, value: kv.value, rev: kv.rev });
        }
        for (const key of before.keys())
          if (!this.entries.has(key)) this.emit({ type: 'delete', key, rev: String(this.rev) });
        return;
      } catch (e) {
        this.log.warn('state cache reload failed; retrying', { err: String(e) });
        await sleep(RESTART_DELAY_MS);
      }
    }
  }

  private apply(e: StoreEvent<unknown>): void {
    const rev = Number(e.rev);
    // A change seen already (a watch that reconnected resends from its last revision). Several
    // keys of one transaction share a revision, so this is decided per key.
    const have = this.entries.get(e.key);
    if (e.type === 'put' ? have !== undefined && Number(have.rev) >= rev : have === undefined && rev <= this.rev)
      return;
    if (e.type === 'put') {
      if (!this.entries.has(e.key)) this.sorted = null;
      this.entries.set(e.key, { key: e.key, value: e.value, rev: e.rev });
    } else if (this.entries.delete(e.key)) this.sorted = null;
    if (rev > this.rev) this.rev = rev;
    this.emit(e);
    this.wake();
  }

  private emit(e: StoreEvent<unknown>): void {
    for (const l of this.listeners) {
      if (!e.key.startsWith(l.prefix)) continue;
      try {
        l.fn(e);
      } catch (err) {
        this.log.error('a state listener failed', { key: e.key, err: String((err as Error).stack ?? err) });
      }
    }
  }

  private wake(): void {
    for (const w of this.waiters) {
      if (this.rev >= w.rev) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  /** The revision of the store this copy shows. */
  get revision(): string {
    return String(this.rev);
  }

  get<T>(key: string): Versioned<T> | undefined {
    return this.entries.get(key) as Versioned<T> | undefined;
  }

  /** Every entry under `prefix`, in key order. */
  list<T>(prefix: string): Versioned<T>[] {
    this.sorted ??= [...this.entries.keys()].sort();
    const keys = this.sorted;
    const out: Versioned<T>[] = [];
    for (let i = lowerBound(keys, prefix); i < keys.length && keys[i]!.startsWith(prefix); i++)
      out.push(this.entries.get(keys[i]!) as Versioned<T>);
    return out;
  }

  count(prefix: string): number {
    return this.list(prefix).length;
  }

  /**
   * Resolves once the copy shows revision `rev` or later: after writing at `rev`, read your own
   * write. Resolves anyway after `timeoutMs` (a slow watch must not hang a caller).
   */
  caughtUp(rev: string, timeoutMs = 5000): Promise<void> {
    const want = Number(rev);
    if (this.rev >= want) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { rev: want, resolve };
      this.waiters.add(w);
      setTimeout(() => {
        this.waiters.delete(w);
        resolve();
      }, timeoutMs).unref();
    });
  }

  /** Calls `fn` for every change under `prefix` from now on; returns the unsubscribe. */
  subscribe<T>(prefix: string, fn: (e: StoreEvent<T>) => void): () => void {
    const l: Listener = { prefix, fn: fn as (e: StoreEvent<unknown>) => void };
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    for (const w of this.waiters) w.resolve();
    this.waiters.clear();
    await this.stopWatch?.();
  }
}

function lowerBound(keys: string[], prefix: string): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (keys[mid]! < prefix) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
