/**
 * The desired state of the platform, in etcd (the KvStore of kv.ts). Values are JSON; every
 * change is a compare-and-swap on the key's mod revision, so two API calls racing on one
 * object cannot both win. Ranges are read in pages, so no answer outgrows gRPC's 4 MiB message
 * limit however many VMs there are.
 */
import { Etcd3, type IKeyValue } from 'etcd3';
import { noop } from 'cockatiel';
import { FdError } from '../../core/errors.js';
import { conflictBackoff, type KvStore, type Snapshot, type StoreEvent, type TxnOps, type Versioned } from './kv.js';

export type { StoreEvent, Versioned } from './kv.js';

export const ROOT = '/flightdeck/';

/** Longest a unary etcd call may take on one member before it is retried on another. */
export const CALL_DEADLINE_MS = 8000;
/** Keys per range request: 1,000 records of a few KiB stay far below the message limit. */
const PAGE = 1000;

function decode<T>(kv: IKeyValue, prefixLen: number): Versioned<T> {
  return { key: kv.key.toString().slice(prefixLen), value: JSON.parse(kv.value.toString()) as T, rev: kv.mod_revision };
}

/** The first key after every key that starts with `prefix` (etcd's range end for a prefix). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]!++;
      return end;
    }
  }
  return Buffer.from([0]);
}

export class Store implements KvStore {
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
    return (await this.snapshot(prefix)).kvs as Versioned<T>[];
  }

  async snapshot(prefix: string): Promise<Snapshot> {
    const end = prefixEnd(this.k(prefix));
    const out: Versioned<unknown>[] = [];
    let start: Buffer = Buffer.from(this.k(prefix));
    let rev: string | undefined;
    for (;;) {
      const q = this.client.getAll().inRange({ start, end }).sort('Key', 'Ascend').limit(PAGE);
      // Every page at the revision of the first: the pages together are one point in time.
      if (rev) q.revision(rev);
      const res = await q.exec();
      rev ??= res.header.revision;
      for (const kv of res.kvs) out.push(decode(kv, this.root.length));
      if (!res.more || !res.kvs.length) return { rev, kvs: out };
      start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  async count(prefix: string): Promise<number> {
    return this.client.getAll().prefix(this.k(prefix)).count();
  }

  async create<T>(key: string, value: T, opts: { lease?: string } = {}): Promise<string | undefined> {
    const put = this.client.put(this.k(key)).value(JSON.stringify(value));
    if (opts.lease) put.lease(opts.lease);
    const res = await this.client.if(this.k(key), 'Create', '==', 0).then(put).commit();
    return res.succeeded ? res.header.revision : undefined;
  }

  async update<T>(key: string, value: T, rev: string): Promise<string | undefined> {
    const res = await this.client
      .if(this.k(key), 'Mod', '==', rev)
      .then(this.client.put(this.k(key)).value(JSON.stringify(value)))
      .commit();
    return res.succeeded ? res.header.revision : undefined;
  }

  async put<T>(key: string, value: T, opts: { lease?: string } = {}): Promise<string> {
    const put = this.client.put(this.k(key)).value(JSON.stringify(value));
    if (opts.lease) put.lease(opts.lease);
    return (await put.exec()).header.revision;
  }

  async remove(key: string, rev?: string): Promise<string | undefined> {
    if (rev === undefined) return (await this.client.delete().key(this.k(key)).exec()).header.revision;
    const res = await this.client
      .if(this.k(key), 'Mod', '==', rev)
      .then(this.client.delete().key(this.k(key)))
      .commit();
    return res.succeeded ? res.header.revision : undefined;
  }

  async txn(ops: TxnOps): Promise<string | undefined> {
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
    return res.succeeded ? res.header.revision : undefined;
  }

  async mutate<T>(key: string, fn: (current: T) => T | undefined, attempts = 50): Promise<Versioned<T>> {
    for (let i = 0; i < attempts; i++) {
      const cur = await this.get<T>(key);
      if (!cur) throw new FdError('FD_NOT_FOUND', `${key} does not exist`);
      const next = fn(cur.value);
      if (next === undefined) return cur;
      // The new revision is the transaction's: no second read to learn it.
      const rev = await this.update(key, next, cur.rev);
      if (rev) return { key, value: next, rev };
      await conflictBackoff(i);
    }
    throw new FdError('FD_STORE_CONFLICT', `${key} changed too often to update; try again`);
  }

  async watch<T>(
    prefix: string,
    onEvent: (e: StoreEvent<T>) => void,
    opts: { fromRev?: string; onLost?: (err: Error) => void } = {},
  ): Promise<() => Promise<void>> {
    const b = this.client.watch().prefix(this.k(prefix));
    if (opts.fromRev) b.startRevision(opts.fromRev);
    const watcher = await b.create();
    const n = this.root.length;
    watcher.on('put', (kv) =>
      onEvent({
        type: 'put',
        key: kv.key.toString().slice(n),
        value: JSON.parse(kv.value.toString()) as T,
        rev: kv.mod_revision,
      }),
    );
    watcher.on('delete', (kv) => onEvent({ type: 'delete', key: kv.key.toString().slice(n), rev: kv.mod_revision }));
    // etcd cancels a watch whose start revision was compacted away: the caller starts over.
    watcher.on('error', (err: Error) => opts.onLost?.(err));
    return async () => {
      await watcher.cancel();
    };
  }

  close(): void {
    this.client.close();
  }
}
