/**
 * The desired state of the platform, in etcd. Values are JSON; every change is a
 * compare-and-swap on the key's mod revision, so two API calls racing on one object cannot
 * both win. `mutate` is the usual way to change a record: read, compute, CAS, retry.
 */
import { Etcd3, type IKeyValue } from 'etcd3';
import { noop } from 'cockatiel';
import { FdError } from '../../core/errors.js';

export interface Versioned<T> {
  key: string;
  value: T;
  /** etcd mod revision of the key: pass back to update/remove for compare-and-swap. */
  rev: string;
}

export type StoreEvent<T> = { type: 'put'; key: string; value: T } | { type: 'delete'; key: string };

export const ROOT = '/flightdeck/';

/** Longest a unary etcd call may take on one member before it is retried on another. */
export const CALL_DEADLINE_MS = 8000;

function decode<T>(kv: IKeyValue, prefixLen: number): Versioned<T> {
  return { key: kv.key.toString().slice(prefixLen), value: JSON.parse(kv.value.toString()) as T, rev: kv.mod_revision };
}

export class Store {
  readonly client: Etcd3;

  constructor(
    readonly endpoints: string[],
    readonly root = ROOT,
  ) {
    // No circuit breaker per endpoint (etcd3's default opens after 3 failed calls and refuses
    // every call to that endpoint for 5 s: under load in CI it refused all of them, and with
    // one endpoint nothing else is left). Several endpoints: a member cut off from its peers
    // (partitioned, frozen) accepts calls it cannot answer, so a unary call gets a deadline and
    // etcd3's retry sends it to another member. One endpoint: no deadline, nowhere to go.
    const several = endpoints.length > 1;
    this.client = new Etcd3({
      hosts: endpoints,
      dialTimeout: 3000,
      faultHandling: { host: () => noop },
      ...(several
        ? {
            defaultCallOptions: (ctx: { isStream: boolean }) =>
              ctx.isStream ? {} : { deadline: new Date(Date.now() + CALL_DEADLINE_MS) },
          }
        : {}),
      // gRPC keepalives notice a dead connection (a partitioned or frozen member) on streams
      // such as watches and lease keepalives. Not more often than etcd's default
      // --grpc-keepalive-min-time (5 s), or it answers with too_many_pings.
      grpcOptions: {
        'grpc.keepalive_time_ms': 10_000,
        'grpc.keepalive_timeout_ms': 5_000,
        'grpc.keepalive_permit_without_calls': 1,
        // A range read of 10,000 VM records is ~5 MB: over gRPC's 4 MiB default, the VM list
        // failed with RESOURCE_EXHAUSTED (found by bench/ui). etcd's own reply limit is larger.
        'grpc.max_receive_message_length': 256 * 1024 * 1024,
      },
    });
  }

  private k(key: string): string {
    return this.root + key;
  }

  async get<T>(key: string): Promise<Versioned<T> | undefined> {
    const res = await this.client.get(this.k(key)).exec();
    const kv = res.kvs[0];
    return kv ? decode<T>(kv, this.root.length) : undefined;
  }

  async list<T>(prefix: string): Promise<Versioned<T>[]> {
    const res = await this.client.getAll().prefix(this.k(prefix)).sort('Key', 'Ascend').exec();
    return res.kvs.map((kv) => decode<T>(kv, this.root.length));
  }

  async count(prefix: string): Promise<number> {
    return this.client.getAll().prefix(this.k(prefix)).count();
  }

  /** Creates the key only if it does not exist; false when it does. */
  async create<T>(key: string, value: T, opts: { lease?: string } = {}): Promise<boolean> {
    const put = this.client.put(this.k(key)).value(JSON.stringify(value));
    if (opts.lease) put.lease(opts.lease);
    const res = await this.client.if(this.k(key), 'Create', '==', 0).then(put).commit();
    return res.succeeded;
  }

  /** Replaces the value only if the key is still at `rev`; false when someone changed it. */
  async update<T>(key: string, value: T, rev: string): Promise<boolean> {
    const res = await this.client
      .if(this.k(key), 'Mod', '==', rev)
      .then(this.client.put(this.k(key)).value(JSON.stringify(value)))
      .commit();
    return res.succeeded;
  }

  /** Unconditional write: only for data with a single writer (a host's own status). */
  async put<T>(key: string, value: T, opts: { lease?: string } = {}): Promise<void> {
    const put = this.client.put(this.k(key)).value(JSON.stringify(value));
    if (opts.lease) put.lease(opts.lease);
    await put.exec();
  }

  async remove(key: string, rev?: string): Promise<boolean> {
    if (rev === undefined) {
      await this.client.delete().key(this.k(key)).exec();
      return true;
    }
    const res = await this.client
      .if(this.k(key), 'Mod', '==', rev)
      .then(this.client.delete().key(this.k(key)))
      .commit();
    return res.succeeded;
  }

  /**
   * Several keys changed atomically: every `expect` must hold (rev '0' = must not exist), then
   * all puts and deletes apply together.
   */
  async txn(ops: {
    expect: { key: string; rev: string }[];
    put?: { key: string; value: unknown }[];
    del?: string[];
  }): Promise<boolean> {
    const [first, ...rest] = ops.expect;
    if (!first) throw new Error('txn needs at least one expectation');
    const cmp = (e: { key: string; rev: string }): ['Create' | 'Mod', string | number] =>
      e.rev === '0' ? ['Create', 0] : ['Mod', e.rev];
    const [c0, v0] = cmp(first);
    let b = this.client.if(this.k(first.key), c0, '==', v0);
    for (const e of rest) {
      const [c, v] = cmp(e);
      b = b.and(this.k(e.key), c, '==', v);
    }
    const clauses = [
      ...(ops.put ?? []).map((p) => this.client.put(this.k(p.key)).value(JSON.stringify(p.value))),
      ...(ops.del ?? []).map((d) => this.client.delete().key(this.k(d))),
    ];
    const res = await b.then(...clauses).commit();
    return res.succeeded;
  }

  /**
   * Read-modify-write with retry on conflict. `fn` returns the new value, or undefined to leave
   * the record alone; it may throw an FdError to refuse the change.
   */
  async mutate<T>(key: string, fn: (current: T) => T | undefined, attempts = 50): Promise<Versioned<T>> {
    for (let i = 0; i < attempts; i++) {
      const cur = await this.get<T>(key);
      if (!cur) throw new FdError('FD_NOT_FOUND', `${key} does not exist`);
      const next = fn(cur.value);
      if (next === undefined) return cur;
      if (await this.update(key, next, cur.rev)) {
        const after = await this.get<T>(key);
        return after ?? { ...cur, value: next };
      }
      await new Promise((r) => setTimeout(r, Math.random() * 5 * (i + 1)));
    }
    throw new FdError('FD_STORE_CONFLICT', `${key} changed too often to update; try again`);
  }

  /** Calls `onEvent` for every change under `prefix` until the returned function is called. */
  async watch<T>(prefix: string, onEvent: (e: StoreEvent<T>) => void): Promise<() => Promise<void>> {
    const watcher = await this.client.watch().prefix(this.k(prefix)).create();
    const n = this.root.length;
    watcher.on('put', (kv) =>
      onEvent({ type: 'put', key: kv.key.toString().slice(n), value: JSON.parse(kv.value.toString()) as T }),
    );
    watcher.on('delete', (kv) => onEvent({ type: 'delete', key: kv.key.toString().slice(n) }));
    return async () => {
      await watcher.cancel();
    };
  }

  close(): void {
    this.client.close();
  }
}
