/**
 * The KvStore in memory, for tests of the cluster's logic without etcd: one global revision
 * counter, a key's revision is that of its last change, compare-and-swap and transactions are
 * atomic, and watches see every change after their start revision, in order, asynchronously
 * (as etcd's do). kv.test.ts runs the same checks against this and a real etcd.
 */
import { FdError } from '../../core/errors.js';
import { conflictBackoff, type KvStore, type Snapshot, type StoreEvent, type TxnOps, type Versioned } from './kv.js';

interface Entry {
  json: string;
  rev: number;
}

type Listener = { prefix: string; fn: (e: StoreEvent<unknown>) => void; from: number };

/** Changes kept for watches that start in the past (etcd keeps history until compaction). */
const HISTORY = 10_000;

export class MemoryStore implements KvStore {
  private readonly data = new Map<string, Entry>();
  private revision = 1;
  private readonly history: StoreEvent<unknown>[] = [];
  private readonly listeners = new Set<Listener>();
  /** Calls made, by method: what a test counts to bound the round trips of an operation. */
  readonly calls = new Map<string, number>();

  private count_(method: string): void {
    this.calls.set(method, (this.calls.get(method) ?? 0) + 1);
  }

  /** Round trips so far (every call but watch setup, as each is one request to etcd). */
  get roundTrips(): number {
    let n = 0;
    for (const [m, c] of this.calls) if (m !== 'watch') n += c;
    return n;
  }

  get currentRev(): string {
    return String(this.revision);
  }

  private read<T>(key: string): Versioned<T> | undefined {
    const e = this.data.get(key);
    return e ? { key, value: JSON.parse(e.json) as T, rev: String(e.rev) } : undefined;
  }

  private apply(puts: { key: string; value: unknown }[], dels: string[]): void {
    this.revision++;
    const rev = this.revision;
    const events: StoreEvent<unknown>[] = [];
    for (const p of puts) {
      const json = JSON.stringify(p.value);
      this.data.set(p.key, { json, rev });
      events.push({ type: 'put', key: p.key, value: JSON.parse(json), rev: String(rev) });
    }
    for (const d of dels) {
      if (this.data.delete(d)) events.push({ type: 'delete', key: d, rev: String(rev) });
    }
    this.history.push(...events);
    if (this.history.length > HISTORY) this.history.splice(0, this.history.length - HISTORY);
    for (const ev of events) this.deliver(ev);
  }

  private deliver(ev: StoreEvent<unknown>): void {
    for (const l of this.listeners) {
      if (!ev.key.startsWith(l.prefix) || Number(ev.rev) < l.from) continue;
      // Asynchronous, like a watch over the network: never inside the writer's call.
      queueMicrotask(() => {
        if (this.listeners.has(l)) l.fn(ev);
      });
    }
  }

  async get<T>(key: string): Promise<Versioned<T> | undefined> {
    this.count_('get');
    return this.read<T>(key);
  }

  private range(prefix: string): Versioned<unknown>[] {
    return [...this.data.keys()]
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((k) => this.read(k)!);
  }

  async list<T>(prefix: string): Promise<Versioned<T>[]> {
    this.count_('list');
    return this.range(prefix) as Versioned<T>[];
  }

  async snapshot(prefix: string): Promise<Snapshot> {
    this.count_('snapshot');
    return { rev: String(this.revision), kvs: this.range(prefix) };
  }

  async count(prefix: string): Promise<number> {
    this.count_('count');
    return [...this.data.keys()].filter((k) => k.startsWith(prefix)).length;
  }

  async create<T>(key: string, value: T): Promise<string | undefined> {
    this.count_('create');
    if (this.data.has(key)) return undefined;
    this.apply([{ key, value }], []);
    return this.currentRev;
  }

  async update<T>(key: string, value: T, rev: string): Promise<string | undefined> {
    this.count_('update');
    if (String(this.data.get(key)?.rev) !== rev) return undefined;
    this.apply([{ key, value }], []);
    return this.currentRev;
  }

  async put<T>(key: string, value: T): Promise<string> {
    this.count_('put');
    this.apply([{ key, value }], []);
    return this.currentRev;
  }

  async remove(key: string, rev?: string): Promise<string | undefined> {
    this.count_('remove');
    if (rev !== undefined && String(this.data.get(key)?.rev) !== rev) return undefined;
    if (this.data.has(key)) this.apply([], [key]);
    return this.currentRev;
  }

  async txn(ops: TxnOps): Promise<string | undefined> {
    this.count_('txn');
    if (!ops.expect.length) throw new Error('txn needs at least one expectation');
    for (const e of ops.expect) {
      const cur = this.data.get(e.key);
      if (e.rev === '0' ? cur !== undefined : String(cur?.rev) !== e.rev) return undefined;
    }
    this.apply(ops.put ?? [], ops.del ?? []);
    return this.currentRev;
  }

  async mutate<T>(key: string, fn: (current: T) => T | undefined, attempts = 50): Promise<Versioned<T>> {
    for (let i = 0; i < attempts; i++) {
      const cur = await this.get<T>(key);
      if (!cur) throw new FdError('FD_NOT_FOUND', `${key} does not exist`);
      const next = fn(cur.value);
      if (next === undefined) return cur;
      const rev = await this.update(key, next, cur.rev);
      if (rev) return { key, value: next, rev };
      await conflictBackoff(i);
    }
    throw new FdError('FD_STORE_CONFLICT', `${key} changed too often to update; try again`);
  }

  async watch<T>(
    prefix: string,
    onEvent: (e: StoreEvent<T>) => void,
    opts: { fromRev?: string } = {},
  ): Promise<() => Promise<void>> {
    this.count_('watch');
    const from = opts.fromRev ? Number(opts.fromRev) : this.revision + 1;
    const l: Listener = { prefix, fn: onEvent as (e: StoreEvent<unknown>) => void, from };
    // Replay what happened since `fromRev`, then go live: no change is missed or seen twice.
    const past = this.history.filter((e) => Number(e.rev) >= from && e.key.startsWith(prefix));
    this.listeners.add(l);
    for (const ev of past) queueMicrotask(() => this.listeners.has(l) && l.fn(ev));
    return async () => {
      this.listeners.delete(l);
    };
  }

  close(): void {
    this.listeners.clear();
  }
}
