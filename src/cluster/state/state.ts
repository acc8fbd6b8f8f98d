/**
 * The state layer in one object: the store (writes), the watch-fed cache (reads), and the
 * typed repositories over both. A daemon opens one; tests open one over a MemoryStore.
 */
import type { Logger } from '../../core/log.js';
import { StateCache } from './cache.js';
import { Catalog } from './catalog.js';
import { HostRepo } from './hosts.js';
import { keys } from './keys.js';
import type { KvStore, StoreEvent } from './kv.js';
import { MigrationRepo } from './migrations.js';
import { ProtectionRepo } from './protection.js';
import { VmRepo } from './vms.js';

export class State {
  readonly cache: StateCache;
  readonly vms: VmRepo;
  readonly hosts: HostRepo;
  readonly catalog: Catalog;
  readonly protection: ProtectionRepo;
  readonly migrations: MigrationRepo;

  private constructor(
    readonly store: KvStore,
    log: Logger,
  ) {
    this.cache = new StateCache(store, log.child({ part: 'state-cache' }));
    const parts = { store, cache: this.cache, log };
    this.vms = new VmRepo(parts);
    this.hosts = new HostRepo(parts);
    this.catalog = new Catalog(parts);
    this.protection = new ProtectionRepo(parts);
    this.migrations = new MigrationRepo(parts);
  }

  /**
   * Calls `fn` for every change of a kind of record from now on (the cache's order: the order
   * they happened in); returns the unsubscribe.
   */
  onChange(kind: WatchedKind, fn: (e: StoreEvent<unknown>) => void): () => void {
    return this.cache.subscribe(PREFIX_OF[kind], fn);
  }

  /** Loads the cache and follows the store; resolves once reads are complete. */
  static async open(store: KvStore, log: Logger): Promise<State> {
    const s = new State(store, log);
    await s.cache.start();
    return s;
  }

  async close(): Promise<void> {
    await this.cache.close();
  }
}

export type WatchedKind = 'vms' | 'vm-statuses' | 'hosts' | 'alive' | 'networks' | 'protection' | 'tasks' | 'tokens';

const PREFIX_OF: Record<WatchedKind, string> = {
  vms: keys.vms,
  'vm-statuses': keys.vmStatuses,
  hosts: keys.hosts,
  alive: keys.alives,
  networks: keys.networks,
  protection: keys.protections,
  tasks: keys.tasks,
  tokens: keys.tokens,
};
