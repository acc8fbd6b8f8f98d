/** Operations on VMs: the lifecycle a Proxmox or Xen Orchestra user expects. */
import { vmDetails } from './vm-details.js';
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import { Name, RestartPolicy, Size } from '../../cluster/state/model.js';
import type { VmView } from '../../cluster/state/vms.js';
import { defineOperation, defineTaskOperation, type OpContext } from '../operation.js';
import { place } from '../../cluster/clustering/placement.js';
import { flag, ownerOf } from './common.js';

const VmRef = z.string().min(1).max(64).describe('VM name or id');
const VmOut = z.looseObject({ id: z.string(), name: z.string(), state: z.string(), desired: z.string() });
const VM_COLUMNS = ['name', 'state', 'desired', 'cpus', 'memory', 'host', 'mirror', 'image', 'id'];

function summary(vm: VmView): Record<string, unknown> {
  return {
    ...vm,
    memory: `${Math.round(vm.memoryBytes / 1024 / 1024)}M`,
    // One word for tables: the mirroring state and where the copy is.
    mirror: vm.protection ? `${vm.protection.state}${vm.protection.standby ? `:${vm.protection.standby}` : ''}` : '-',
  };
}

/** "user=ann,ssh-key=ssh-ed25519 AAA...,hostname=web1" -> fields; values may hold "=" but not ",". */
export const CloudInit = z
  .union([
    z.string().max(8192),
    z.strictObject({
      user: z.string().optional(),
      sshKey: z.string().optional(),
      hostname: z.string().optional(),
      password: z.string().optional(),
      userData: z.string().optional(),
    }),
  ])
  .transform((v, ctx) => {
    if (typeof v !== 'string') return v;
    const out: Record<string, string> = {};
    for (const part of v.split(',').filter(Boolean)) {
      const i = part.indexOf('=');
      const key = i < 0 ? part : part.slice(0, i);
      const map: Record<string, string> = {
        user: 'user',
        'ssh-key': 'sshKey',
        hostname: 'hostname',
        password: 'password',
        'user-data': 'userData',
      };
      if (i < 0 || !map[key.trim()]) {
        ctx.addIssue({
          code: 'custom',
          message: `cloud-init: "${key}" is not one of user, ssh-key, hostname, password, user-data`,
        });
        return z.NEVER;
      }
      out[map[key.trim()]!] = part.slice(i + 1);
    }
    return out as { user?: string; sshKey?: string; hostname?: string; password?: string; userData?: string };
  });

export const VmCreateInput = z.strictObject({
  name: Name.describe('VM name'),
  image: Name.optional().describe('disk image to start from (see "image list"), e.g. tiny'),
  iso: Name.optional().describe('ISO image to attach and boot from (installers)'),
  cpus: z.coerce.number().int().min(1).max(64).default(1).describe('virtual CPUs'),
  memory: Size.default(256 * 1024 * 1024).describe('memory, e.g. 256M'),
  diskSize: Size.optional().describe('disk size, e.g. 2G (at least the image size)'),
  network: Name.default('default').describe('network to plug the NIC into ("none" for no NIC)'),
  cloudInit: CloudInit.optional().describe('NoCloud seed: user=...,ssh-key=...,hostname=...'),
  restartPolicy: RestartPolicy.default('never').describe('what to do when the guest crashes'),
  firmware: z.enum(['bios', 'uefi']).default('bios').describe('firmware'),
  host: Name.optional().describe('run it on this host (default: placement chooses)'),
  antiAffinity: Name.optional().describe('keep it off hosts that run VMs of this group'),
  placementReasons: z.array(z.string().max(500)).max(100).optional().describe('set by the host that placed the VM'),
  start: flag('start it once created'),
});
export type VmCreateInput = z.output<typeof VmCreateInput>;

function powerOp(
  verb: 'start' | 'shutdown' | 'stop' | 'pause' | 'resume' | 'reboot',
  summaryText: string,
  extra: z.ZodRawShape,
  work: (
    ctx: OpContext,
    vm: VmView,
    input: Record<string, unknown>,
  ) => (t: import('../../cluster/state/tasks.js').TaskHandle) => Promise<unknown>,
) {
  return defineTaskOperation({
    name: `vm.${verb}`,
    summary: summaryText,
    http: { method: 'POST', path: `/vms/:id/actions/${verb}` },
    input: z.strictObject({ id: VmRef, ...extra }),
    permission: 'write',
    cli: { noun: 'vm', verb, args: ['id'] },
    route: ownerOf,
    run: async (ctx, input) => {
      const vm = await ctx.svc.vms.get(input.id);
      return {
        title: `${verb} ${vm.name}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: work(ctx, vm, input),
      };
    },
  });
}

function refuse(code: `FD_${string}`, message: string, hint: string): never {
  throw new FdError(code, message, { hint, status: 409 });
}

export const vmOperations = [
  defineOperation({
    name: 'vm.list',
    summary: 'list VMs with their state',
    http: { method: 'GET', path: '/vms' },
    input: z.strictObject({}),
    output: z.array(VmOut),
    permission: 'read',
    cli: { noun: 'vm', verb: 'list', columns: VM_COLUMNS },
    run: async ({ svc }) => (await svc.vms.list()).map(summary),
  }),
  defineOperation({
    name: 'vm.show',
    summary: 'show one VM: its configuration and state',
    http: { method: 'GET', path: '/vms/:id' },
    input: z.strictObject({ id: VmRef }),
    output: VmOut,
    permission: 'read',
    cli: { noun: 'vm', verb: 'show', args: ['id'] },
    run: async ({ svc }, { id }) => {
      const vm = await svc.vms.get(id);
      return { ...summary(vm), ...(await vmDetails(svc, vm)) };
    },
  }),
  defineTaskOperation({
    name: 'vm.create',
    summary: 'create a VM from an image and/or an installer ISO',
    http: { method: 'POST', path: '/vms' },
    input: VmCreateInput,
    permission: 'write',
    cli: {
      noun: 'vm',
      verb: 'create',
      args: ['name'],
      flags: { memory: { value: 'SIZE' }, diskSize: { value: 'SIZE' } },
    },
    route: async ({ svc }, input) => {
      if (input.host && input.placementReasons) return { host: input.host };
      const decision = place(
        {
          cpus: input.cpus,
          memoryBytes: input.memory,
          pinnedHost: input.host ?? null,
          antiAffinity: input.antiAffinity ?? null,
        },
        await svc.agent.placementHosts(),
        await svc.agent.placedVms(),
      );
      return { host: decision.host, patch: { host: decision.host, placementReasons: decision.reasons } };
    },
    run: async ({ svc }, input) => {
      if (!input.image && !input.iso && !input.diskSize) {
        throw new FdError('FD_VM_NO_DISK', 'a VM needs an image, an ISO or a disk size', {
          hint: 'pass --image tiny, --iso NAME (with --disk-size to install onto), or --disk-size 8G',
        });
      }
      if ((await svc.store.get(`vm-names/${input.name}`)) !== undefined) {
        throw new FdError('FD_VM_EXISTS', `a VM named ${input.name} already exists`, {
          hint: 'choose another name',
          status: 409,
        });
      }
      await svc.agent.checkCreate(input);
      return {
        title: `create VM ${input.name}`,
        target: { kind: 'vm', id: '', name: input.name },
        work: async (t) => {
          const rec = await svc.agent.provisionVm(input, t);
          if (input.start) await svc.agent.startVm(rec.id, t);
          return summary(await svc.vms.get(rec.id));
        },
      };
    },
  }),
  defineTaskOperation({
    name: 'vm.delete',
    summary: 'delete a VM and its disks (a running VM needs --force)',
    http: { method: 'DELETE', path: '/vms/:id' },
    input: z.strictObject({
      id: VmRef,
      force: flag('stop it first if it runs'),
    }),
    permission: 'write',
    cli: { noun: 'vm', verb: 'delete', args: ['id'] },
    route: ownerOf,
    run: async ({ svc }, { id, force }) => {
      const vm = await svc.vms.get(id);
      if (!force && vm.state !== 'stopped' && vm.state !== 'crashed') {
        refuse('FD_VM_RUNNING', `VM ${vm.name} is ${vm.state}`, 'stop it first, or pass --force');
      }
      return {
        title: `delete VM ${vm.name}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: (t) => svc.agent.destroyVm(vm.id, t),
      };
    },
  }),
  powerOp('start', 'start a VM', {}, (ctx, vm) => {
    if (vm.state === 'running' || vm.state === 'paused' || (vm.desired === 'running' && vm.state === 'starting')) {
      refuse('FD_VM_ALREADY_RUNNING', `VM ${vm.name} is already ${vm.state}`, 'stop it first, or use reboot');
    }
    return (t) => ctx.svc.agent.startVm(vm.id, t);
  }),
  powerOp(
    'shutdown',
    'shut a VM down gracefully (ACPI), forcing it off after a timeout',
    { timeout: z.string().max(16).default('60s').describe('force it off after this long, e.g. 60s') },
    (ctx, vm, input) => {
      if (vm.state === 'stopped') refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is not running`, 'nothing to do');
      const timeoutMs = parseDurationMs(String(input['timeout']));
      return (t) => ctx.svc.agent.stopVm(vm.id, { graceful: true, timeoutMs }, t);
    },
  ),
  powerOp('stop', 'power a VM off at once (like pulling the plug)', {}, (ctx, vm) => {
    if (vm.state === 'stopped') refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is not running`, 'nothing to do');
    return (t) => ctx.svc.agent.stopVm(vm.id, { graceful: false, timeoutMs: 0 }, t);
  }),
  powerOp('pause', 'pause a running VM (its vCPUs stop; memory stays)', {}, (ctx, vm) => {
    if (vm.state !== 'running')
      refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}, not running`, 'start it first');
    return (t) => ctx.svc.agent.pauseVm(vm.id, true, t);
  }),
  powerOp('resume', 'resume a paused VM', {}, (ctx, vm) => {
    if (vm.state !== 'paused')
      refuse('FD_VM_NOT_PAUSED', `VM ${vm.name} is ${vm.state}, not paused`, 'only a paused VM can resume');
    return (t) => ctx.svc.agent.pauseVm(vm.id, false, t);
  }),
  powerOp('reboot', 'reboot a running VM', {}, (ctx, vm) => {
    if (vm.state !== 'running')
      refuse('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}, not running`, 'start it instead');
    return (t) => ctx.svc.agent.rebootVm(vm.id, t);
  }),
  defineOperation({
    name: 'vm.logs',
    summary: "the last lines of a VM's serial console and QEMU log",
    http: { method: 'GET', path: '/vms/:id/logs' },
    input: z.strictObject({
      id: VmRef,
      lines: z.coerce.number().int().min(1).max(10000).default(100).describe('how many lines'),
    }),
    output: z.object({ serial: z.array(z.string()), qemu: z.array(z.string()) }),
    permission: 'read',
    cli: { noun: 'vm', verb: 'logs', args: ['id'] },
    route: ownerOf,
    run: async ({ svc }, { id, lines }) => {
      const vm = await svc.vms.get(id);
      return svc.agent.logs(vm.id, lines);
    },
  }),
];
