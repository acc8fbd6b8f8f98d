/**
 * VM records: find by id or name, views with their status, create (with the unique-name
 * record in the same transaction), change by compare-and-swap, move ownership (with the VM's
 * disks, in one transaction), delete, and the owner's status. Reads come from the state cache;
 * every write goes to the store and waits until the cache shows it, so a caller reads its own
 * writes.
 */
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { StateCache } from './cache.js';
import { keys } from './keys.js';
import type { KvStore, Versioned } from './kv.js';
import { DiskRecord, ProtectionRecord, VmRecord, VmStatus } from './model.js';
import { parsed, parsedAll } from './parse.js';

export interface VmView extends VmRecord {
  state: VmStatus['state'];
  pid: number | null;
  lastError: string | null;
  restarts: number;
  /** When the VM entered its current state (its uptime, while it runs). */
  since: string | null;
  /** Mirroring state, when the VM is protected (vm protect). */
  protection: Pick<
    ProtectionRecord,
    'state' | 'primary' | 'standby' | 'requestedStandby' | 'since' | 'lastError' | 'progress'
  > | null;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UPDATE_ATTEMPTS = 50;

export interface StateParts {
  store: KvStore;
  cache: StateCache;
  log: Logger;
}

export function notFound(ref: string): FdError {
  return new FdError('FD_VM_NOT_FOUND', `no VM named or with id "${ref.slice(0, 80)}"`, {
    hint: 'list VMs with "flightdeck vm list"',
  });
}

export class VmRepo {
  constructor(private readonly s: StateParts) {}

  private bad = (key: string, err: FdError): void => this.s.log.warn('skipping a record', { key, err: err.message });

  /** The record as the cache has it, by id or name. */
  cached(ref: string): Versioned<VmRecord> | undefined {
    let id = ref;
    if (!UUID_RE.test(ref)) {
      const idx = this.s.cache.get<string>(keys.vmName(ref));
      if (!idx) return undefined;
      id = String(idx.value);
    }
    const kv = this.s.cache.get(keys.vm(id));
    return kv ? parsed(kv, VmRecord) : undefined;
  }

  /**
   * The record by id or name. One this host has not seen yet (created a moment ago on another
   * host) is read from the store.
   */
  async find(ref: string): Promise<Versioned<VmRecord>> {
    const hit = this.cached(ref);
    if (hit) return hit;
    let id = ref;
    if (!UUID_RE.test(ref)) {
      const idx = await this.s.store.get<string>(keys.vmName(ref));
      if (!idx) throw notFound(ref);
      id = idx.value;
    }
    const rec = await this.fresh(id);
    if (!rec) throw notFound(ref);
    return rec;
  }

  /** The record as the store has it now (a decision that must not rest on a stale copy). */
  async fresh(id: string): Promise<Versioned<VmRecord> | undefined> {
    const kv = await this.s.store.get<unknown>(keys.vm(id));
    return kv ? parsed(kv, VmRecord) : undefined;
  }

  records(): VmRecord[] {
    return parsedAll(this.s.cache.list(keys.vms), VmRecord, this.bad).map((v) => v.value);
  }

  ownedBy(host: string): VmRecord[] {
    return this.records().filter((v) => v.host === host);
  }

  status(id: string): VmStatus | undefined {
    const kv = this.s.cache.get(keys.vmStatus(id));
    return kv ? parsed(kv, VmStatus).value : undefined;
  }

  private protectionOf(id: string): ProtectionRecord | undefined {
    const kv = this.s.cache.get(keys.protection(id));
    return kv ? parsed(kv, ProtectionRecord).value : undefined;
  }

  view(rec: VmRecord, status = this.status(rec.id), prot = this.protectionOf(rec.id)): VmView {
    return {
      ...rec,
      ha: rec.ha ?? null,
      protection: prot
        ? {
            state: prot.state,
            primary: prot.primary,
            standby: prot.standby,
            requestedStandby: prot.requestedStandby,
            since: prot.since,
            lastError: prot.lastError,
            progress: prot.progress,
          }
        : null,
      state: status?.state ?? (rec.desired === 'stopped' ? 'stopped' : 'unknown'),
      pid: status?.pid ?? null,
      lastError: status?.lastError ?? null,
      restarts: status?.restarts ?? 0,
      since: status?.since ?? null,
    };
  }

  list(): VmView[] {
    return this.records()
      .map((r) => this.view(r))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async get(ref: string): Promise<VmView> {
    return this.view((await this.find(ref)).value);
  }

  /** Whether a VM of this name exists (or is being created). */
  nameTaken(name: string): boolean {
    return this.s.cache.get(keys.vmName(name)) !== undefined;
  }

  /**
   * The one way VMs come to exist: their records, their unique names and their disks in one
   * transaction, so two creates of one name cannot both succeed and no disk record is ever left
   * without its VM. `alsoNew` are further records that must not exist yet (an appliance's
   * group), created in the same transaction.
   */
  async create(
    rec: VmRecord | VmRecord[],
    disks: DiskRecord[] = [],
    alsoNew: { key: string; value: unknown }[] = [],
  ): Promise<VmRecord[]> {
    const vms = (Array.isArray(rec) ? rec : [rec]).map((r) => VmRecord.parse(r));
    const rev = await this.s.store.txn({
      expect: [
        ...vms.flatMap((vm) => [
          { key: keys.vmName(vm.name), rev: '0' },
          { key: keys.vm(vm.id), rev: '0' },
        ]),
        ...alsoNew.map((a) => ({ key: a.key, rev: '0' })),
      ],
      put: [
        ...vms.flatMap((vm) => [
          { key: keys.vmName(vm.name), value: vm.id },
          { key: keys.vm(vm.id), value: vm },
        ]),
        ...disks.map((d) => ({ key: keys.disk(d.id), value: DiskRecord.parse(d) })),
        ...alsoNew,
      ],
    });
    if (!rev)
      throw new FdError('FD_VM_EXISTS', `a VM named ${vms.map((v) => v.name).join(' or ')} already exists`, {
        hint: 'choose another name, or delete the old VM first',
      });
    await this.s.cache.caughtUp(rev);
    return vms;
  }

  /**
   * Changes a VM record through `fn` by compare-and-swap; `fn` sees the current record and
   * throws an FdError to refuse, or returns undefined to leave it as it is. The first attempt
   * starts from the cached copy (no read); a conflict reads the store.
   */
  async update(ref: string, fn: (rec: VmRecord) => VmRecord | undefined): Promise<Versioned<VmRecord>> {
    let cur = await this.find(ref);
    for (let i = 0; i < UPDATE_ATTEMPTS; i++) {
      const next = fn(cur.value);
      if (next === undefined) return cur;
      const value = VmRecord.parse({ ...next, updatedAt: new Date().toISOString() });
      const rev = await this.s.store.update(keys.vm(value.id), value, cur.rev);
      if (rev) {
        await this.s.cache.caughtUp(rev);
        return { key: keys.vm(value.id), value, rev };
      }
      const again = await this.fresh(cur.value.id);
      if (!again) throw notFound(ref);
      cur = again;
    }
    throw new FdError('FD_STORE_CONFLICT', `VM ${ref} changed too often to update; try again`);
  }

  /** The record, its name and its status go together. */
  async remove(id: string): Promise<void> {
    for (let i = 0; i < UPDATE_ATTEMPTS; i++) {
      const rec = await this.fresh(id);
      if (!rec) return;
      const rev = await this.s.store.txn({
        expect: [{ key: keys.vm(id), rev: rec.rev }],
        del: [keys.vm(id), keys.vmName(rec.value.name), keys.vmStatus(id)],
      });
      if (rev) {
        await this.s.cache.caughtUp(rev);
        return;
      }
    }
    throw new FdError('FD_STORE_CONFLICT', `VM ${id} changed too often to delete; try again`);
  }

  /**
   * Ownership moves, with the VM's disks, in one transaction: the VM record (still at the
   * revision the caller read), each disk record (its host and, where given, its new path), the
   * VM's protection record when given, and, with `whileLost`, only while that host is still
   * without its liveness key (a lost host that came back keeps its VM; the two can never both
   * win). Returns false, changing nothing, when any of it moved meanwhile. The only place
   * where a VM changes hands: migration, planned failover and takeover all come here.
   */
  async moveOwner(o: {
    vm: Versioned<VmRecord>;
    to: string;
    diskPaths?: Record<string, string>;
    whileLost?: string;
    protection?: ProtectionRecord;
  }): Promise<boolean> {
    const disks = await Promise.all(
      o.vm.value.disks.map(async (d) => {
        const kv = await this.s.store.get<unknown>(keys.disk(d.diskId));
        return kv ? { ref: d, rec: parsed(kv, DiskRecord) } : undefined;
      }),
    );
    const now = new Date().toISOString();
    const rev = await this.s.store.txn({
      expect: [
        { key: keys.vm(o.vm.value.id), rev: o.vm.rev },
        ...disks.flatMap((d) => (d ? [{ key: d.rec.key, rev: d.rec.rev }] : [])),
        ...(o.whileLost ? [{ key: keys.alive(o.whileLost), rev: '0' }] : []),
      ],
      put: [
        { key: keys.vm(o.vm.value.id), value: { ...o.vm.value, host: o.to, updatedAt: now } },
        ...disks.flatMap((d) =>
          d
            ? [
                {
                  key: d.rec.key,
                  value: { ...d.rec.value, host: o.to, path: o.diskPaths?.[d.ref.id] ?? d.rec.value.path },
                },
              ]
            : [],
        ),
        ...(o.protection ? [{ key: keys.protection(o.vm.value.id), value: ProtectionRecord.parse(o.protection) }] : []),
      ],
    });
    if (rev) await this.s.cache.caughtUp(rev);
    return rev !== undefined;
  }

  /**
   * Confirms in one transaction that `vm` (at the revision read) is still owned while `host`
   * still holds its liveness key at `aliveRev`: a fenced host that got its lease back keeps its
   * VM only if nobody took it meanwhile.
   */
  async confirmOwner(vm: Versioned<VmRecord>, host: string, aliveRev: string): Promise<boolean> {
    const rev = await this.s.store.txn({
      expect: [
        { key: vm.key, rev: vm.rev },
        { key: keys.alive(host), rev: aliveRev },
      ],
      put: [{ key: vm.key, value: { ...vm.value, updatedAt: new Date().toISOString() } }],
    });
    if (rev) await this.s.cache.caughtUp(rev);
    return rev !== undefined;
  }

  /**
   * What the owner observes, written only while `host` owns the VM (a migration target before
   * the move, or a source after it, also runs processes for the VM and must not speak for it).
   * Returns false when `host` is not the owner.
   */
  async publishStatus(status: VmStatus): Promise<boolean> {
    for (let i = 0; i < 3; i++) {
      const rec = i === 0 ? this.cached(status.id) : await this.fresh(status.id);
      if (!rec || rec.value.host !== status.host) return false;
      const rev = await this.s.store.txn({
        expect: [{ key: rec.key, rev: rec.rev }],
        put: [{ key: keys.vmStatus(status.id), value: status }],
      });
      if (rev) return true;
    }
    return false;
  }

  /** A status written for a VM whose owner cannot speak (the leader, for a lost host's VMs). */
  async reportStatus(status: VmStatus): Promise<void> {
    await this.s.store.put(keys.vmStatus(status.id), status);
  }
}
