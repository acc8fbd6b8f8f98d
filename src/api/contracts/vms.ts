/** Contracts of the VM lifecycle: list, show, create, delete, the power actions and logs. */
import { z } from 'zod';
import { operation, taskOperation, internalOperation } from '../../core/contract.js';
import { Name, RestartPolicy, Size } from '../../cluster/state/model.js';
import { TaskOut, VmOut, VmRef, flag } from './common.js';

export const VM_COLUMNS = ['name', 'state', 'desired', 'cpus', 'memory', 'host', 'mirror', 'image', 'id'];

const CLOUD_INIT_KEYS: Record<string, string> = {
  user: 'user',
  'ssh-key': 'sshKey',
  hostname: 'hostname',
  password: 'password',
  'user-data': 'userData',
};

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
      const field = CLOUD_INIT_KEYS[key.trim()];
      if (i < 0 || !field) {
        ctx.addIssue({
          code: 'custom',
          message: `cloud-init: "${key}" is not one of user, ssh-key, hostname, password, user-data`,
        });
        return z.NEVER;
      }
      out[field] = part.slice(i + 1);
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
  start: flag('start it once created'),
});
export type VmCreateInput = z.output<typeof VmCreateInput>;

export const vmList = operation({
  name: 'vm.list',
  summary: 'list VMs with their state',
  http: { method: 'GET', path: '/vms' },
  input: z.strictObject({}),
  output: z.array(VmOut),
  permission: 'read',
  cli: { noun: 'vm', verb: 'list', columns: VM_COLUMNS },
});

export const vmShow = operation({
  name: 'vm.show',
  summary: 'show one VM: its configuration and state',
  http: { method: 'GET', path: '/vms/:id' },
  input: z.strictObject({ id: VmRef }),
  output: VmOut,
  permission: 'read',
  errors: ['FD_VM_NOT_FOUND'],
  cli: { noun: 'vm', verb: 'show', args: ['id'] },
});

export const vmCreate = taskOperation({
  name: 'vm.create',
  summary: 'create a VM from an image and/or an installer ISO',
  http: { method: 'POST', path: '/vms' },
  input: VmCreateInput,
  output: VmOut,
  permission: 'write',
  errors: ['FD_VM_NO_DISK', 'FD_VM_EXISTS', 'FD_VM_SPEC_INVALID', 'FD_NO_HOST_WITH_ROOM', 'FD_IMAGE_NOT_FOUND'],
  cli: {
    noun: 'vm',
    verb: 'create',
    args: ['name'],
    flags: { memory: { value: 'SIZE' }, diskSize: { value: 'SIZE' } },
  },
});

/** Host to host: the host placement chose creates the VM (the task runs there). */
export const vmCreatePlaced = internalOperation({
  name: 'vm.create.placed',
  summary: 'the host placement chose for a new VM creates it, with the reasons of the choice in its task log',
  http: { method: 'POST', path: '/internal/vms/placed' },
  input: z.strictObject({
    spec: VmCreateInput,
    reasons: z.array(z.string().max(500)).max(100),
  }),
  output: TaskOut,
  permission: 'admin',
  errors: ['FD_VM_EXISTS', 'FD_VM_SPEC_INVALID'],
});

export const vmDelete = taskOperation({
  name: 'vm.delete',
  summary: 'delete a VM and its disks (a running VM needs --force)',
  http: { method: 'DELETE', path: '/vms/:id' },
  input: z.strictObject({ id: VmRef, force: flag('stop it first if it runs') }),
  output: z.object({ deleted: z.string() }),
  permission: 'write',
  errors: ['FD_VM_NOT_FOUND', 'FD_VM_RUNNING'],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'delete', args: ['id'] },
});

const PowerOut = z.object({ state: z.string() });

function power(verb: string, summary: string, extra: z.ZodRawShape = {}) {
  return taskOperation({
    name: `vm.${verb}`,
    summary,
    http: { method: 'POST', path: `/vms/:id/actions/${verb}` },
    input: z.strictObject({ id: VmRef, ...extra }),
    output: PowerOut,
    permission: 'write',
    errors: ['FD_VM_NOT_FOUND', 'FD_VM_NOT_RUNNING', 'FD_VM_ALREADY_RUNNING', 'FD_VM_NOT_PAUSED'],
    route: { to: 'owner', field: 'id' },
    cli: { noun: 'vm', verb, args: ['id'] },
  });
}

export const vmStart = power('start', 'start a VM');
export const vmShutdown = power('shutdown', 'shut a VM down gracefully (ACPI), forcing it off after a timeout', {
  timeout: z.string().max(16).default('60s').describe('force it off after this long, e.g. 60s'),
});
export const vmStop = power('stop', 'power a VM off at once (like pulling the plug)');
export const vmPause = power('pause', 'pause a running VM (its vCPUs stop; memory stays)');
export const vmResume = power('resume', 'resume a paused VM');
export const vmReboot = power('reboot', 'reboot a running VM');

export const vmLogs = operation({
  name: 'vm.logs',
  summary: "the last lines of a VM's serial console and QEMU log",
  http: { method: 'GET', path: '/vms/:id/logs' },
  input: z.strictObject({
    id: VmRef,
    lines: z.coerce.number().int().min(1).max(10000).default(100).describe('how many lines'),
  }),
  output: z.object({ serial: z.array(z.string()), qemu: z.array(z.string()) }),
  permission: 'read',
  errors: ['FD_VM_NOT_FOUND'],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'logs', args: ['id'] },
});

export const vmContracts = [
  vmList,
  vmShow,
  vmCreate,
  vmDelete,
  vmStart,
  vmShutdown,
  vmStop,
  vmPause,
  vmResume,
  vmReboot,
  vmLogs,
];
