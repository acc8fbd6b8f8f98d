/**
 * Power actions on this host's VMs, as tasks ask for them: start (with admission), stop
 * (ACPI or plug), pause, resume, reboot, delete. Each runs under the VM's lock, so parallel
 * calls on one VM apply one after another. A start makes its desired state `running` and
 * publishes `starting` before QEMU is spawned, reading everything else from the state cache:
 * a VM start costs two round trips to etcd.
 */
import { FdError } from '../../core/errors.js';
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import { placeIn } from '../clustering/placement.js';
import type { Protection } from '../protection/protection.js';
import type { Provisioner } from '../provisioning/provisioner.js';
import type { Runtime } from '../runtime/runtime.js';
import type { VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';
import type { StatusPublisher } from './status.js';

export interface PowerDeps {
  hostName: string;
  state: State;
  runtime: Runtime;
  provisioner: Provisioner;
  protection: Protection;
  status: StatusPublisher;
  locks: KeyedLock;
  log: Logger;
}

export class Power {
  constructor(private readonly d: PowerDeps) {}

  /** Spawns the VM's processes and publishes what comes of it (no lock: callers hold it). */
  async launch(vm: VmRecord, restarts?: number): Promise<void> {
    await this.d.status.publish(vm.id, { state: 'starting', pid: null, lastError: null }, restarts);
    try {
      await this.d.runtime.start(vm, this.d.log.child({ vm: vm.name }));
    } catch (err) {
      await this.d.status.publish(vm.id, {
        state: 'crashed',
        pid: null,
        lastError: err instanceof Error ? err.message : String(err),
      });
      throw err;
    }
    await this.d.status.publish(vm.id, await this.d.runtime.status(vm.id));
  }

  start(id: string, t: TaskHandle): Promise<{ state: string }> {
    return this.d.locks.run(id, async () => {
      const st = await this.d.runtime.status((await this.d.state.vms.find(id)).value.id);
      // Admitted first: a start refused for room changes nothing, not even the desired state.
      if (st.state !== 'running' && st.state !== 'paused') this.admit((await this.d.state.vms.find(id)).value, t);
      const { value: vm } = await this.d.state.vms.update(id, (cur) =>
        cur.desired === 'running' ? undefined : { ...cur, desired: 'running' },
      );
      if (st.state === 'running' || st.state === 'paused') {
        t.log(`${vm.name} is already ${st.state}`);
        return { state: st.state };
      }
      t.log(`starting ${vm.name} on ${this.d.hostName}`);
      await this.launch(vm);
      t.log(`${vm.name} is running`);
      return { state: 'running' };
    });
  }

  /** Refuses a start that would take this host past its memory or vCPU limits. */
  private admit(vm: VmRecord, t: TaskHandle): void {
    const state = this.d.state;
    const decision = placeIn(
      {
        vms: state.vms,
        // A host in maintenance still runs what its owner starts by hand.
        hosts: {
          list: () => state.hosts.list().map((h) => (h.name === this.d.hostName ? { ...h, state: 'online' } : h)),
        },
      },
      {
        vmId: vm.id,
        cpus: vm.cpus,
        memoryBytes: vm.memoryBytes,
        pinnedHost: this.d.hostName,
        antiAffinity: vm.antiAffinity,
      },
    );
    for (const r of decision.reasons) t.log(`admission: ${r}`);
  }

  stop(id: string, opts: { graceful: boolean; timeoutMs: number }, t: TaskHandle): Promise<{ state: string }> {
    return this.d.locks.run(id, async () => {
      const { value: vm } = await this.d.state.vms.update(id, (cur) =>
        cur.desired === 'stopped' ? undefined : { ...cur, desired: 'stopped' },
      );
      const st = await this.d.runtime.status(vm.id);
      if (st.state !== 'stopped' && st.state !== 'crashed') {
        await this.d.status.publish(vm.id, { ...st, state: 'stopping' });
        t.log(
          opts.graceful
            ? `asking ${vm.name} to shut down (ACPI), forcing after ${opts.timeoutMs} ms`
            : `powering ${vm.name} off`,
        );
        await this.d.runtime.stop(vm.id, opts);
      }
      const after = await this.d.runtime.status(vm.id);
      await this.d.status.publish(vm.id, after);
      return { state: after.state };
    });
  }

  setPaused(id: string, paused: boolean): Promise<{ state: string }> {
    return this.d.locks.run(id, async () => {
      await this.d.runtime.setPaused(id, paused);
      const st = await this.d.runtime.status(id);
      await this.d.status.publish(id, st);
      return { state: st.state };
    });
  }

  reboot(id: string, t: TaskHandle): Promise<{ state: string }> {
    return this.d.locks.run(id, async () => {
      t.log('resetting the VM');
      await this.d.runtime.reboot(id);
      const st = await this.d.runtime.status(id);
      await this.d.status.publish(id, st);
      return { state: st.state };
    });
  }

  /** Deletes a VM: its processes, its mirror's standby copy, its records and its disks. */
  destroy(id: string, t: TaskHandle): Promise<{ deleted: string }> {
    return this.d.locks.run(id, async () => {
      const rec = await this.d.state.vms.fresh(id);
      if (!rec) throw new FdError('FD_VM_NOT_FOUND', `no VM ${id}`);
      const st = await this.d.runtime.status(id);
      if (st.state !== 'stopped' && st.state !== 'crashed') {
        t.log(`stopping ${rec.value.name}`);
        await this.d.runtime.stop(id, { graceful: false, timeoutMs: 0 });
      }
      await this.d.runtime.cleanup(id);
      await this.d.protection.forget(rec.value);
      await this.d.state.vms.remove(id);
      this.d.status.forget(id);
      await this.d.provisioner.removeVmDisks(rec.value, t);
      return { deleted: rec.value.name };
    });
  }
}
