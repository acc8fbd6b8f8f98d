/**
 * The target host's side of a live migration, driven by the source through internal calls:
 *   prepare: fresh disks here, the VM's vdisk, and a QEMU waiting for the incoming state
 *            (-incoming defer -S) whose NBD server exports the new disks for the source's
 *            mirrors;
 *   finish:  once the source is paused and in sync, wait for the incoming state (QEMU's
 *            MIGRATION event), run the guest, then stop exporting;
 *   abort:   remove everything prepare made, refused once the guest ran here;
 *   state:   whether the guest runs here (the source asks after a failed finish or a restart).
 * Each step holds the VM's lock, so an abort waits for a finish in progress.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { freePort } from '../../core/ports.js';
import { qemuIds } from '../../qemu/nodes.js';
import type { DiskFiles } from '../provisioning/disks.js';
import { forceOff, type Runtime } from '../runtime/runtime.js';
import type { State } from '../state/state.js';
import type { DiskPlan, PreparedTarget } from './plan.js';

export interface MigrationTargetDeps {
  hostName: string;
  /** This host's API address: the migration and NBD listeners bind to the same address. */
  listenAddress: () => string;
  state: State;
  runtime: Runtime;
  disks: DiskFiles;
  locks: KeyedLock;
  log: Logger;
}

/** The incoming state must have arrived within this long after the source paused. */
const INCOMING_WAIT_MS = 30_000;

export class MigrationTarget {
  constructor(private readonly d: MigrationTargetDeps) {}

  async prepare(req: {
    id: string;
    source: string;
    disks: DiskPlan[];
    multifd?: boolean | undefined;
    postcopy?: boolean | undefined;
  }): Promise<PreparedTarget & { diskPaths: Record<string, string> }> {
    return this.d.locks.run(req.id, async () => {
      const { value: vm } = await this.d.state.vms.find(req.id);
      if (vm.host === this.d.hostName) throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs here`);
      const st = await this.d.runtime.status(req.id);
      if (st.state === 'running' || st.state === 'paused' || st.state === 'starting')
        throw new FdError('FD_MIGRATION_BUSY', `a QEMU for VM ${vm.name} already runs on ${this.d.hostName}`);
      await this.d.runtime.cleanup(req.id);
      const made = await this.d.disks.prepareCopies(req.disks, this.d.disks.vmDir(vm.id));
      const host = this.d.listenAddress();
      try {
        await this.d.runtime.startIncoming(vm, made.paths);
        const ctl = this.d.runtime.control(req.id);
        const nbdPort = await freePort(host);
        await ctl.nbd.serverStart({ host, port: nbdPort });
        for (const dk of req.disks)
          await ctl.nbd.exportAdd({
            name: qemuIds.migrationNode(dk.id),
            node: qemuIds.diskNode(dk.id),
            writable: true,
          });
        const migPort = await freePort(host);
        // Capabilities that must match the source's; events so finish waits on QEMU's word.
        await ctl.migration.setCapabilities({
          multifd: req.multifd ?? false,
          postcopy: req.postcopy ?? false,
          events: true,
        });
        await ctl.migration.listen(`tcp:${host}:${migPort}`);
        return {
          nbd: { host, port: nbdPort },
          disks: req.disks.map((dk) => ({
            id: dk.id,
            exportName: qemuIds.migrationNode(dk.id),
            sync: made.sync[dk.id] ?? 'full',
          })),
          migrateUri: `tcp:${host}:${migPort}`,
          diskPaths: made.paths,
        };
      } catch (err) {
        await this.removeAll(req.id);
        throw err;
      }
    });
  }

  /** The source is paused and in sync: run the guest here. */
  async finish(id: string): Promise<{ pid: number | null; loadWaitMs: number }> {
    return this.d.locks.run(id, async () => {
      const ctl = this.d.runtime.control(id);
      const t0 = Date.now();
      // QEMU marks the incoming migration completed only after the guest's state is loaded.
      const end = await ctl.migration.waitFinal(INCOMING_WAIT_MS);
      if (end.status !== 'completed')
        throw new FdError(
          'FD_MIGRATION_FAILED',
          end.status === 'failed' || end.status === 'cancelled'
            ? `incoming migration ${end.status}${end.error ? `: ${end.error}` : ''}`
            : `the incoming state did not arrive within ${INCOMING_WAIT_MS / 1000} s (${end.status})`,
        );
      const loadWaitMs = Date.now() - t0;
      // The guest is paused on both hosts until this resume. The exports only served the
      // source's mirrors, idle since the source paused: they go after the guest runs.
      await ctl.run.resume();
      await ctl.nbd.exportsRemoveAll();
      await ctl.nbd.serverStop();
      const st = await this.d.runtime.status(id);
      return { pid: st.pid, loadWaitMs };
    });
  }

  /** On failure: nothing of the attempt stays here. */
  async abort(id: string): Promise<{ aborted: true }> {
    return this.d.locks.run(id, async () => {
      const rec = await this.d.state.vms.fresh(id);
      if (rec?.value.host === this.d.hostName)
        throw new FdError('FD_MIGRATION_OWNED', 'this host owns the VM; refusing to tear it down');
      // After `finish` the guest runs here and its writes are only here: the source must
      // complete the move, not undo it.
      if ((await this.d.runtime.qemuStatus(id)) === 'running')
        throw new FdError('FD_MIGRATION_TARGET_RAN', 'the guest already runs on this host; the move must complete');
      await this.removeAll(id);
      return { aborted: true };
    });
  }

  /** Whether this host runs the guest it was receiving, and where its disks are. */
  async state(id: string): Promise<{ qemuStatus: string | null; diskPaths: Record<string, string> }> {
    const qemuStatus = await this.d.runtime.qemuStatus(id);
    const { value: vm } = await this.d.state.vms.find(id);
    return {
      qemuStatus,
      diskPaths: Object.fromEntries(vm.disks.map((dk) => [dk.id, this.d.disks.receivedPath(id, dk.id)])),
    };
  }

  private async removeAll(id: string): Promise<void> {
    await forceOff(this.d.runtime, id);
    await this.d.runtime.cleanup(id);
    await this.d.disks.removeVmDir(id);
  }
}
