/** Protection records (protection/ID): the mirroring state of a protected VM, written by its primary. */
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { StateCache } from './cache.js';
import { keys } from './keys.js';
import type { KvStore, Versioned } from './kv.js';
import { ProtectionRecord } from './model.js';
import { parsed, parsedAll } from './parse.js';

export class ProtectionRepo {
  constructor(private readonly s: { store: KvStore; cache: StateCache; log: Logger }) {}

  get(vmId: string): ProtectionRecord | undefined {
    const kv = this.s.cache.get(keys.protection(vmId));
    return kv ? parsed(kv, ProtectionRecord).value : undefined;
  }

  versioned(vmId: string): Versioned<ProtectionRecord> | undefined {
    const kv = this.s.cache.get(keys.protection(vmId));
    return kv ? parsed(kv, ProtectionRecord) : undefined;
  }

  list(): ProtectionRecord[] {
    return parsedAll(this.s.cache.list(keys.protections), ProtectionRecord, (key, err) =>
      this.s.log.warn('skipping a protection record', { key, err: err.message }),
    ).map((v) => v.value);
  }

  isProtected(vmId: string): boolean {
    return this.s.cache.get(keys.protection(vmId)) !== undefined;
  }

  /** Resolves at the VM's next protection change, or after `timeoutMs`. */
  nextChange(vmId: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        off();
        resolve();
      };
      const off = this.s.cache.subscribe(keys.protection(vmId), done);
      const timer = setTimeout(done, timeoutMs);
    });
  }

  async put(rec: ProtectionRecord): Promise<void> {
    await this.s.cache.caughtUp(await this.s.store.put(keys.protection(rec.vmId), ProtectionRecord.parse(rec)));
  }

  async remove(vmId: string): Promise<void> {
    const rev = await this.s.store.remove(keys.protection(vmId));
    if (rev) await this.s.cache.caughtUp(rev);
  }

  /**
   * Applies `patch` to the record (state changes stamp `since`; `protected` clears the sync
   * progress). A record removed meanwhile (unprotected) stays removed.
   */
  async patch(vmId: string, patch: Partial<ProtectionRecord>): Promise<void> {
    try {
      await this.s.store.mutate<ProtectionRecord>(keys.protection(vmId), (cur) => {
        const next = { ...cur, ...patch, updatedAt: new Date().toISOString() };
        if (patch.state && patch.state !== cur.state) next.since = next.updatedAt;
        if (patch.state === 'protected') next.progress = null;
        return next;
      });
    } catch (err) {
      if (!(err instanceof FdError && err.code === 'FD_NOT_FOUND')) throw err;
    }
  }
}
