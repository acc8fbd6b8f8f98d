/**
 * Hosts: each host's record (capacity, API URL, certificate) and its liveness. A host is lost
 * when its `alive/NAME` key is gone (its fence keeper stopped renewing the lease); this is the
 * one place that decides it, for placement, the API, mirroring and the failover controller.
 */
import type { Logger } from '../../core/log.js';
import type { StateCache } from './cache.js';
import { keys, idOf } from './keys.js';
import type { KvStore } from './kv.js';
import { HostRecord } from './model.js';
import { parsed, parsedAll } from './parse.js';

export type HostState = HostRecord['state'];

/** A host as the cluster sees it now: its record, with `state` 'lost' when it has no lease. */
export type HostView = HostRecord;

export class HostRepo {
  constructor(private readonly s: { store: KvStore; cache: StateCache; log: Logger }) {}

  record(name: string): HostRecord | undefined {
    const kv = this.s.cache.get(keys.host(name));
    return kv ? parsed(kv, HostRecord).value : undefined;
  }

  /** Names of the hosts that hold their liveness lease. */
  alive(): Set<string> {
    return new Set(this.s.cache.list(keys.alives).map((kv) => idOf(keys.alives, kv.key)));
  }

  isAlive(name: string): boolean {
    return this.s.cache.get(keys.alive(name)) !== undefined;
  }

  /** Every host with its state as it is now (lost when it has no lease). */
  list(): HostView[] {
    const alive = this.alive();
    return parsedAll(this.s.cache.list(keys.hosts), HostRecord, (key, err) =>
      this.s.log.warn('skipping a host record', { key, err: err.message }),
    ).map(({ value: h }) => ({ ...h, state: alive.has(h.name) ? h.state : 'lost' }));
  }

  view(name: string): HostView | undefined {
    const h = this.record(name);
    return h && { ...h, state: this.isAlive(name) ? h.state : 'lost' };
  }

  /** A host (re)publishes its record at start; maintenance set by an operator stays. */
  async publish(rec: HostRecord): Promise<void> {
    const prev = await this.s.store.get<HostRecord>(keys.host(rec.name));
    await this.s.store.put(keys.host(rec.name), {
      ...rec,
      state: prev?.value.state === 'maintenance' ? 'maintenance' : 'online',
    });
  }

  async setState(name: string, state: 'online' | 'maintenance'): Promise<HostRecord> {
    const res = await this.s.store.mutate<HostRecord>(keys.host(name), (cur) => ({ ...cur, state }));
    await this.s.cache.caughtUp(res.rev);
    return res.value;
  }

  /** The revision of a host's liveness key as the store has it now (undefined: the host is lost). */
  async freshAliveRev(name: string): Promise<string | undefined> {
    return (await this.s.store.get(keys.alive(name)))?.rev;
  }
}
