/**
 * A Runtime in memory, for unit tests of the cluster's logic (reconcile, fencing, migration
 * recovery, takeover) without QEMU: VMs are entries with a state and a pid, each running one
 * behind a scripted QEMU (qemu/control/fake-qmp.ts) so the control layer works on it. Tests drive it
 * (crash a VM, say it was found running at reattach) and read what was asked of it.
 */
import { FdError } from '../../core/errors.js';
import { QemuControl } from '../../qemu/control/index.js';
import { FakeQmp } from '../../qemu/control/fake-qmp.js';
import type { VmRecord } from '../state/model.js';
import type { Runtime, RuntimeStatus, VmStats } from './runtime.js';

interface FakeVm {
  status: RuntimeStatus;
  qmp: FakeQmp | undefined;
  diskPaths?: Record<string, string>;
}

export class FakeRuntime implements Runtime {
  readonly vms = new Map<string, FakeVm>();
  /** What was asked, in order: "start ID", "stop ID", "cleanup ID"... */
  readonly calls: string[] = [];
  /** Called when a start reaches the point where QEMU would be spawned. */
  onSpawn: ((vm: VmRecord) => void) | undefined;
  private listeners: ((id: string, st: RuntimeStatus) => void)[] = [];
  private gate: ((id: string) => Promise<boolean>) | undefined;
  private nextPid = 1000;

  /** A VM that runs here already (left by an earlier daemon, found at reattach). */
  running(id: string, qmpStatus: FakeQmp['status'] = 'running'): FakeQmp {
    const qmp = new FakeQmp(qmpStatus);
    this.vms.set(id, { status: { state: 'running', pid: this.nextPid++, lastError: null }, qmp });
    return qmp;
  }

  qmpOf(id: string): FakeQmp | undefined {
    return this.vms.get(id)?.qmp;
  }

  /** The VM's QEMU dies on its own (the runner would report it). */
  crash(id: string, error = 'killed'): void {
    const vm = this.vms.get(id);
    if (!vm) return;
    vm.status = { state: 'crashed', pid: null, lastError: error };
    vm.qmp = undefined;
    for (const l of this.listeners) l(id, vm.status);
  }

  mayRestart(id: string): Promise<boolean> {
    return this.gate ? this.gate(id) : Promise.resolve(true);
  }

  async reattach(ids: string[]): Promise<Map<string, RuntimeStatus>> {
    this.calls.push('reattach');
    return new Map(ids.map((id) => [id, this.vms.get(id)?.status ?? { state: 'stopped', pid: null, lastError: null }]));
  }

  async start(vm: VmRecord): Promise<void> {
    this.calls.push(`start ${vm.id}`);
    this.onSpawn?.(vm);
    this.vms.set(vm.id, {
      status: { state: 'running', pid: this.nextPid++, lastError: null },
      qmp: new FakeQmp('running'),
    });
  }

  async startIncoming(vm: VmRecord, diskPaths: Record<string, string>): Promise<void> {
    this.calls.push(`start-incoming ${vm.id}`);
    this.vms.set(vm.id, {
      status: { state: 'paused', pid: this.nextPid++, lastError: null },
      qmp: new FakeQmp('inmigrate'),
      diskPaths,
    });
  }

  control(id: string): QemuControl {
    const qmp = this.vms.get(id)?.qmp;
    if (!qmp) throw new FdError('FD_VM_NOT_RUNNING', `VM ${id} is not running`);
    return new QemuControl(qmp);
  }

  async qemuStatus(id: string): Promise<FakeQmp['status'] | null> {
    return this.vms.get(id)?.qmp?.status ?? null;
  }

  async stop(id: string): Promise<void> {
    this.calls.push(`stop ${id}`);
    const vm = this.vms.get(id);
    if (!vm || vm.status.state === 'stopped') throw new FdError('FD_VM_NOT_RUNNING', `VM ${id} is not running`);
    vm.status = { state: 'stopped', pid: null, lastError: null };
    vm.qmp = undefined;
  }

  async setPaused(id: string, paused: boolean): Promise<void> {
    const vm = this.vms.get(id);
    if (!vm?.qmp) throw new FdError('FD_VM_NOT_RUNNING', `VM ${id} is not running`);
    vm.qmp.status = paused ? 'paused' : 'running';
    vm.status = { ...vm.status, state: paused ? 'paused' : 'running' };
  }

  async reboot(id: string): Promise<void> {
    this.calls.push(`reboot ${id}`);
  }

  async status(id: string): Promise<RuntimeStatus> {
    return this.vms.get(id)?.status ?? { state: 'stopped', pid: null, lastError: null };
  }

  async serialSocket(id: string): Promise<string> {
    return `/nonexistent/${id}/serial.sock`;
  }

  async vncSocket(id: string): Promise<string> {
    return `/nonexistent/${id}/vnc.sock`;
  }

  async screenshot(): Promise<Buffer> {
    return Buffer.alloc(0);
  }

  async logs(): Promise<{ serial: string[]; qemu: string[] }> {
    return { serial: [], qemu: [] };
  }

  async stats(ids: { id: string; name: string }[]): Promise<VmStats[]> {
    return ids.map((v) => ({ id: v.id, name: v.name }));
  }

  async localIds(): Promise<string[]> {
    return [...this.vms.keys()];
  }

  async cleanup(id: string): Promise<void> {
    this.calls.push(`cleanup ${id}`);
    const vm = this.vms.get(id);
    if (vm && (vm.status.state === 'running' || vm.status.state === 'paused'))
      throw new FdError('FD_VM_RUNNING_CONFLICT', `VM ${id} is running`);
    this.vms.delete(id);
  }

  onChange(listener: (id: string, status: RuntimeStatus) => void): void {
    this.listeners.push(listener);
  }

  async applyRestartPolicy(vm: VmRecord): Promise<void> {
    this.calls.push(`policy ${vm.id} ${vm.restartPolicy}`);
  }

  setRestartGate(gate: (id: string) => Promise<boolean>): void {
    this.gate = gate;
  }

  async close(): Promise<void> {
    this.listeners = [];
  }
}
