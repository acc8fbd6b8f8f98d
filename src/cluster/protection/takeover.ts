/**
 * Unplanned failover, on the standby (the leader asks): the primary `from` is lost. The copy is
 * fenced (its vdisk killed: the old primary can write nothing more), made the VM's disk here,
 * and ownership taken in one transaction that holds only while `from` is still without a
 * lease; then the VM starts. Refused when the mirror did not run continuously (its vdisk died:
 * the copy may miss writes) or the VM is not `from`'s any more.
 */
import { FdError, type ErrorCode } from '../../core/errors.js';
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import type { Runtime } from '../runtime/runtime.js';
import type { ProtectionRecord, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { StandbyCopies } from './standby.js';

export type TakeoverVerdict = { do: 'done' } | { do: 'take' } | { do: 'refuse'; code: ErrorCode; message: string };

/** Whether this host may take the VM over from `from` (pure: decided on what it finds). */
export function takeoverVerdict(
  vm: VmRecord,
  from: string,
  hostName: string,
  copy: { vdiskAlive: boolean } | undefined,
): TakeoverVerdict {
  if (vm.host === hostName) return { do: 'done' }; // a retried call
  if (vm.host !== from)
    return { do: 'refuse', code: 'FD_TAKEOVER_STALE', message: `${vm.name} is owned by ${vm.host}, not ${from}` };
  if (!copy) return { do: 'refuse', code: 'FD_NO_STANDBY_COPY', message: `this host holds no copy of ${vm.name}` };
  if (!copy.vdiskAlive)
    return {
      do: 'refuse',
      code: 'FD_STANDBY_COPY_STALE',
      message: `the mirror of ${vm.name} here stopped before the primary was lost; it may miss writes`,
    };
  return { do: 'take' };
}

export interface TakeoverDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  locks: KeyedLock;
  log: Logger;
  /** Starts a VM this host now owns (guarded first). */
  adopted: (id: string) => Promise<void>;
}

export async function takeover(
  d: TakeoverDeps,
  standby: StandbyCopies,
  req: { id: string; from: string },
): Promise<{ host: string; state: string }> {
  return d.locks.run(req.id, async () => {
    const vmRec = await d.state.vms.fresh(req.id);
    if (!vmRec) throw new FdError('FD_VM_NOT_FOUND', `no VM ${req.id}`);
    const vm = vmRec.value;
    const local = await standby.local(req.id);
    const verdict = takeoverVerdict(vm, req.from, d.hostName, local && { vdiskAlive: !!(await standby.live(req.id)) });
    if (verdict.do === 'done') return { host: d.hostName, state: (await d.runtime.status(req.id)).state };
    if (verdict.do === 'refuse') throw new FdError(verdict.code, verdict.message);
    // Fence: after this no byte from the old primary reaches the copy.
    await standby.fence(local!, { clean: false });
    const paths = await standby.adopt(req.id, local!);
    const prot = d.state.protection.get(req.id);
    const now = new Date().toISOString();
    const owned = await d.state.vms.moveOwner({
      vm: vmRec,
      to: d.hostName,
      diskPaths: paths,
      whileLost: req.from,
      ...(prot
        ? {
            protection: {
              ...prot,
              primary: d.hostName,
              standby: null,
              state: 'degraded',
              lastError: `failed over from ${req.from}`,
              since: now,
              updatedAt: now,
            } satisfies ProtectionRecord,
          }
        : {}),
    });
    if (!owned)
      throw new FdError('FD_TAKEOVER_STALE', `${vm.name} changed or ${req.from} came back; not taking it over`);
    d.log.warn('took over a VM from a lost host', { vm: vm.name, from: req.from });
    await d.adopted(req.id);
    return { host: d.hostName, state: (await d.runtime.status(req.id)).state };
  });
}
