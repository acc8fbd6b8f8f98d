/** Migration intents (migrations/ID): what a source needs to finish or undo a migration after a restart. */
import type { Logger } from '../../core/log.js';
import type { StateCache } from './cache.js';
import { keys } from './keys.js';
import type { KvStore } from './kv.js';
import { MigrationIntent } from './model.js';
import { parsed, parsedAll } from './parse.js';

export class MigrationRepo {
  constructor(private readonly s: { store: KvStore; cache: StateCache; log: Logger }) {}

  /** As the store has it now: recovery decides on it. */
  async get(vmId: string): Promise<MigrationIntent | undefined> {
    const kv = await this.s.store.get<unknown>(keys.migration(vmId));
    return kv ? parsed(kv, MigrationIntent).value : undefined;
  }

  async list(): Promise<MigrationIntent[]> {
    return parsedAll(await this.s.store.list<unknown>(keys.migrations), MigrationIntent, (key, err) =>
      this.s.log.warn('skipping a migration intent', { key, err: err.message }),
    ).map((v) => v.value);
  }

  /** VM ids with a migration in flight, as the cache has them. */
  moving(): Set<string> {
    return new Set(this.s.cache.list<MigrationIntent>(keys.migrations).map((kv) => kv.value.vmId));
  }

  async put(intent: MigrationIntent): Promise<void> {
    await this.s.store.put(keys.migration(intent.vmId), MigrationIntent.parse(intent));
  }

  async remove(vmId: string): Promise<void> {
    await this.s.store.remove(keys.migration(vmId));
  }
}
