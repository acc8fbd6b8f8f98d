/**
 * VM records in the store: create, find by id or name, change desired power state, delete.
 * Names are unique through an index key created in the same transaction as the record, so two
 * creates of one name cannot both succeed. Status (what is running) is written by the host
 * agent of the owning host under status/vms/ and merged into the view here.
 */
import { FdError } from '../../core/errors.js';
import { VmRecord, type ProtectionRecord, type VmStatus } from './model.js';
import type { Store, Versioned } from './store.js';

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

export class VmService {
  constructor(private readonly store: Store) {}

  view(rec: VmRecord, status: VmStatus | undefined, prot?: ProtectionRecord): VmView {
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

  async list(): Promise<VmView[]> {
    const [recs, statuses, prots] = await Promise.all([
      this.store.list<VmRecord>('vms/'),
      this.store.list<VmStatus>('status/vms/'),
      this.store.list<ProtectionRecord>('protection/'),
    ]);
    const byId = new Map(statuses.map((s) => [s.value.id, s.value]));
    const protById = new Map(prots.map((p) => [p.value.vmId, p.value]));
    return recs
      .map((r) => this.view(r.value, byId.get(r.value.id), protById.get(r.value.id)))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  async find(ref: string): Promise<Versioned<VmRecord>> {
    let id = ref;
    if (!UUID_RE.test(ref)) {
      const idx = await this.store.get<string>(`vm-names/${ref}`);
      if (!idx) throw notFound(ref);
      id = idx.value;
    }
    const rec = await this.store.get<VmRecord>(`vms/${id}`);
    if (!rec) throw notFound(ref);
    return rec;
  }

  async get(ref: string): Promise<VmView> {
    const rec = await this.find(ref);
    const prot = (await this.store.get<ProtectionRecord>(`protection/${rec.value.id}`))?.value;
    return this.view(rec.value, await this.status(rec.value.id), prot);
  }

  async status(id: string): Promise<VmStatus | undefined> {
    return (await this.store.get<VmStatus>(`status/vms/${id}`))?.value;
  }

  async create(rec: VmRecord): Promise<VmRecord> {
    const parsed = VmRecord.parse(rec);
    const ok = await this.store.txn({
      expect: [
        { key: `vm-names/${parsed.name}`, rev: '0' },
        { key: `vms/${parsed.id}`, rev: '0' },
      ],
      put: [
        { key: `vm-names/${parsed.name}`, value: parsed.id },
        { key: `vms/${parsed.id}`, value: parsed },
      ],
    });
    if (!ok) {
      throw new FdError('FD_VM_EXISTS', `a VM named ${parsed.name} already exists`, {
        hint: 'choose another name, or delete the old VM first',
      });
    }
    return parsed;
  }

  /**
   * Changes a VM record through `fn` with compare-and-swap; `fn` sees the current record and
   * status and throws an FdError to refuse.
   */
  async update(
    ref: string,
    fn: (rec: VmRecord, status: VmStatus | undefined) => VmRecord | undefined,
  ): Promise<VmRecord> {
    const { value } = await this.find(ref);
    const status = await this.status(value.id);
    const res = await this.store.mutate<VmRecord>(`vms/${value.id}`, (cur) => {
      const next = fn(cur, status);
      return next ? { ...next, updatedAt: new Date().toISOString() } : undefined;
    });
    return res.value;
  }

  async remove(id: string): Promise<void> {
    const rec = await this.store.get<VmRecord>(`vms/${id}`);
    if (!rec) return;
    await this.store.txn({
      expect: [{ key: `vms/${id}`, rev: rec.rev }],
      del: [`vms/${id}`, `vm-names/${rec.value.name}`, `status/vms/${id}`],
    });
  }
}

function notFound(ref: string): FdError {
  return new FdError('FD_VM_NOT_FOUND', `no VM named or with id "${ref.slice(0, 80)}"`, {
    hint: 'list VMs with "flightdeck vm list"',
  });
}
