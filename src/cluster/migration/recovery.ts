/**
 * A daemon that died during a migration left work half done; at its next start, as the source,
 * it finishes or undoes each one. What to do is decided by `recoveryStep` from the intent and
 * the VM's record alone (pure, and tested without QEMU); `recoverMigrations` carries it out.
 *   finishing: the target may run the guest already. Resolved in the background under the VM's
 *              lock, with the source paused until the target answers: completed when it ran
 *              the guest, undone otherwise.
 *   aborting:  the source resumed already; only the target's side is left to remove.
 *   copying:   the target never ran the guest: cancel here, resume, remove the target's side.
 * One copy runs afterwards either way.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { isMigrationNode, diskIdOfNode } from '../../qemu/nodes.js';
import type { Runtime } from '../runtime/runtime.js';
import type { MigrationIntent, VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { MigrationSource } from './source.js';
import { releaseSourceMirrors } from './transfer.js';

export type RecoveryStep = 'forget' | 'skip' | 'resolve-finishing' | 'abort-target' | 'undo';

/** What this host, as a migration's source, does about an intent it finds at start. */
export function recoveryStep(
  intent: MigrationIntent,
  vm: VmRecord | undefined,
  o: { hostName: string; active: boolean },
): RecoveryStep {
  if (!vm) return 'forget';
  // Not ours to recover: another host's migration, a VM owned elsewhere now, or one in progress.
  if (intent.from !== o.hostName || vm.host !== o.hostName || o.active) return 'skip';
  if (intent.phase === 'finishing') return 'resolve-finishing';
  if (intent.phase === 'aborting') return 'abort-target';
  return 'undo';
}

export interface RecoveryDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  locks: KeyedLock;
  log: Logger;
  source: MigrationSource;
}

export async function recoverMigrations(d: RecoveryDeps): Promise<void> {
  for (const m of await d.state.migrations.list()) {
    const rec = (await d.state.vms.fresh(m.vmId))?.value;
    const step = recoveryStep(m, rec, { hostName: d.hostName, active: d.source.active.has(m.vmId) });
    if (step === 'skip') continue;
    if (step === 'forget') {
      await d.state.migrations.remove(m.vmId);
      continue;
    }
    const vm = rec!;
    if (step === 'resolve-finishing') {
      void d.locks
        .run(m.vmId, async () => {
          const disks = await d.source.resolveFinishing(vm, m);
          if (disks) {
            d.log.warn('completing a migration whose daemon died after the target took over', {
              vm: vm.name,
              to: m.to,
            });
            await d.source.completeMove(vm.id, m.to, disks);
          } else d.log.warn('undid a migration whose daemon died while finishing', { vm: vm.name, to: m.to });
        })
        .catch((err: unknown) => d.log.error('resolving an interrupted migration', { err: String(err) }));
      continue;
    }
    if (step === 'abort-target') {
      await d.source.abortTarget(m.vmId, m);
      continue;
    }
    d.log.warn('undoing a migration cut short by a daemon restart', { vm: vm.name, to: m.to });
    try {
      const ctl = d.runtime.control(m.vmId);
      await ctl.migration.cancel().catch((err: unknown) => d.log.warn('migrate_cancel', { err: String(err) }));
      const jobs = await ctl.jobs.matching(isMigrationNode);
      await releaseSourceMirrors(
        ctl,
        jobs.map((j) => diskIdOfNode(j.device)),
      );
      await ctl.run.resumeIfPaused();
    } catch (err) {
      d.log.warn('source side of an interrupted migration', { err: String(err) });
    }
    await d.source.abortTarget(m.vmId, m);
  }
}
