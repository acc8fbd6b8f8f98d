/** Handlers of the VM lifecycle (contracts/vms.ts). */
import { FdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import { placeIn } from '../../cluster/clustering/placement.js';
import type { VmView } from '../../cluster/state/vms.js';
import type { TaskRecord } from '../../cluster/state/tasks.js';
import {
  vmCreate,
  vmCreatePlaced,
  vmDelete,
  vmList,
  vmLogs,
  vmPause,
  vmReboot,
  vmResume,
  vmShow,
  vmShutdown,
  vmStart,
  vmStop,
  type VmCreateInput,
} from '../contracts/vms.js';
import { vmDetails } from './vm-details.js';
import { handle, handleTask, type Binding, type OpContext, type TaskPlan } from '../handler.js';

/** A VM as the API shows it: its view plus one-word columns for tables. */
export function summary(vm: VmView): VmView & { memory: string; mirror: string } {
  return {
    ...vm,
    memory: `${Math.round(vm.memoryBytes / 1024 / 1024)}M`,
    // One word for tables: the mirroring state and where the copy is.
    mirror: vm.protection ? `${vm.protection.state}${vm.protection.standby ? `:${vm.protection.standby}` : ''}` : '-',
  };
}

function refuse(code: `FD_${string}`, message: string, hint: string): never {
  throw new FdError(code, message, { hint });
}

/** What can be refused on any host, before placement. */
function checkRequest({ svc }: OpContext, input: VmCreateInput): void {
  if (!input.image && !input.iso && !input.diskSize)
    throw new FdError('FD_VM_NO_DISK', 'a VM needs an image, an ISO or a disk size', {
      hint: 'pass --image tiny, --iso NAME (with --disk-size to install onto), or --disk-size 8G',
    });
  if (svc.vms.nameTaken(input.name))
    throw new FdError('FD_VM_EXISTS', `a VM named ${input.name} already exists`, { hint: 'choose another name' });
}

/** Everything, on the host that will make the VM (its images, networks, memory). */
function checkCreate(ctx: OpContext, input: VmCreateInput): void {
  checkRequest(ctx, input);
  ctx.svc.provisioner.check(input);
}

/** The create task, run on the host that will own the VM. */
function createHere(ctx: OpContext, input: VmCreateInput, reasons: string[]): TaskPlan<VmView> {
  const { svc } = ctx;
  return {
    title: `create VM ${input.name}`,
    target: { kind: 'vm', id: '', name: input.name },
    work: async (t) => {
      for (const r of reasons) t.log(`placement: ${r}`);
      const rec = await svc.provisioner.provision(input, t);
      if (input.start) await svc.agent.power.start(rec.id, t);
      return summary(await svc.vms.get(rec.id));
    },
  };
}

/** On the host placement chose: checks again, starts the create task here and returns its record. */
function createPlaced(ctx: OpContext, input: VmCreateInput, reasons: string[]): Promise<TaskRecord> {
  checkCreate(ctx, input);
  const plan = createHere(ctx, input, reasons);
  return ctx.svc.tasks.run(vmCreate.name, plan.title, plan.target, (t) => plan.work(t));
}

function power(
  contract: typeof vmStart,
  check: (vm: VmView) => void,
  work: (ctx: OpContext, vm: VmView, input: Record<string, unknown>) => TaskPlan<{ state: string }>['work'],
): Binding {
  return handleTask(contract, async (ctx, input) => {
    const vm = await ctx.svc.vms.get(input.id);
    check(vm);
    return {
      title: `${contract.cli!.verb} ${vm.name}`,
      target: { kind: 'vm', id: vm.id, name: vm.name },
      work: work(ctx, vm, input),
    };
  });
}

const running = (vm: VmView): boolean => vm.state === 'running' || vm.state === 'paused';

export const vmHandlers: Binding[] = [
  handle(vmList, async ({ svc }) => svc.vms.list().map(summary)),
  handle(vmShow, async ({ svc }, { id }) => {
    const vm = await svc.vms.get(id);
    return { ...summary(vm), ...(await vmDetails(svc, vm)) };
  }),
  handleTask(vmCreate, async (ctx, input) => {
    checkRequest(ctx, input);
    // Placement happens here, on whichever host the call reached; the chosen host runs the task.
    const decision = placeIn(ctx.svc.state, {
      cpus: input.cpus,
      memoryBytes: input.memory,
      pinnedHost: input.host ?? null,
      antiAffinity: input.antiAffinity ?? null,
    });
    if (decision.host === ctx.svc.hostName) {
      checkCreate(ctx, input);
      return createHere(ctx, input, decision.reasons);
    }
    const task = await ctx.svc.peers.call(decision.host, vmCreatePlaced, { spec: input, reasons: decision.reasons });
    return { startedElsewhere: task as unknown as TaskRecord };
  }),
  handle(vmCreatePlaced, (ctx, { spec, reasons }) => createPlaced(ctx, spec, reasons)),
  handleTask(vmDelete, async ({ svc }, { id, force }) => {
    const vm = await svc.vms.get(id);
    if (!force && vm.state !== 'stopped' && vm.state !== 'crashed')
      refuse('FD_VM_RUNNING', `VM ${vm.name} is ${vm.state}`, 'stop it first, or pass --force');
    return {
      title: `delete VM ${vm.name}`,
      target: { kind: 'vm', id: vm.id, name: vm.name },
      work: (t) => svc.agent.power.destroy(vm.id, t),
    };
  }),
  power(
    vmStart,
    (vm) => {
      if (running(vm) || (vm.desired === 'running' && vm.state === 'starting'))
        refuse('FD_VM_ALREADY_RUNNING', `VM ${vm.name} is already ${vm.state}`, 'stop it first, or use reboot');
    },
    ({ svc }, vm) =>
      (t) =>
        svc.agent.power.start(vm.id, t),
  ),
  power(
    vmShutdown,
    (vm) => {
      if (vm.state === 'stopped') refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is not running`, 'nothing to do');
    },
    ({ svc }, vm, input) => {
      const timeoutMs = parseDurationMs(String(input['timeout']));
      return (t) => svc.agent.power.stop(vm.id, { graceful: true, timeoutMs }, t);
    },
  ),
  power(
    vmStop,
    (vm) => {
      if (vm.state === 'stopped') refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is not running`, 'nothing to do');
    },
    ({ svc }, vm) =>
      (t) =>
        svc.agent.power.stop(vm.id, { graceful: false, timeoutMs: 0 }, t),
  ),
  power(
    vmPause,
    (vm) => {
      if (vm.state !== 'running')
        refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}, not running`, 'start it first');
    },
    ({ svc }, vm) =>
      () =>
        svc.agent.power.setPaused(vm.id, true),
  ),
  power(
    vmResume,
    (vm) => {
      if (vm.state !== 'paused')
        refuse('FD_VM_NOT_PAUSED', `VM ${vm.name} is ${vm.state}, not paused`, 'only a paused VM can resume');
    },
    ({ svc }, vm) =>
      () =>
        svc.agent.power.setPaused(vm.id, false),
  ),
  power(
    vmReboot,
    (vm) => {
      if (vm.state !== 'running')
        refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}, not running`, 'start it instead');
    },
    ({ svc }, vm) =>
      (t) =>
        svc.agent.power.reboot(vm.id, t),
  ),
  handle(vmLogs, async ({ svc }, { id, lines }) => svc.runtime.logs((await svc.vms.get(id)).id, lines)),
];
