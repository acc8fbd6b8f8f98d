/**
 * High availability and VM mirroring: the user-facing verbs (`vm ha`, `vm protect`,
 * `vm unprotect`, `vm failover`) and the internal steps the primary and the leader drive on a
 * standby host.
 */
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { Name } from '../../cluster/state/model.js';
import { defineOperation, defineTaskOperation } from '../operation.js';
import { Loose, ownerOf } from './common.js';

const VmRef = z.string().min(1).max(64).describe('VM name or id');
const DiskPlan = z.strictObject({ id: z.string(), sizeBytes: z.number().int(), baseImage: z.string().nullable() });

export const protectionOperations = [
  defineOperation({
    name: 'vm.ha',
    summary: 'set the HA policy of a VM: restarted after a crash, and elsewhere when its host is lost',
    http: { method: 'POST', path: '/vms/:id/ha' },
    input: z.strictObject({
      id: VmRef,
      enable: z.boolean().optional().describe('turn HA on'),
      disable: z.boolean().optional().describe('turn HA off'),
      priority: z.coerce.number().int().min(0).max(1000).optional().describe('higher restarts first (default 0)'),
      maxRestarts: z.coerce
        .number()
        .int()
        .min(0)
        .max(100)
        .optional()
        .describe('crash restarts within 10 minutes before giving up (default 3)'),
    }),
    output: Loose,
    permission: 'write',
    cli: { noun: 'vm', verb: 'ha', args: ['id'], flags: { priority: { value: 'N' }, maxRestarts: { value: 'N' } } },
    run: async ({ svc }, input) => {
      if (input.enable && input.disable)
        throw new FdError('FD_BAD_REQUEST', 'pass --enable or --disable, not both', { status: 400 });
      const rec = await svc.vms.find(input.id);
      const cur = rec.value.ha ?? { enabled: false, priority: 0, maxRestarts: 3 };
      const next = {
        enabled: input.enable ? true : input.disable ? false : cur.enabled,
        priority: input.priority ?? cur.priority,
        maxRestarts: input.maxRestarts ?? cur.maxRestarts,
      };
      const vm = await svc.vms.update(rec.value.id, (v) => ({ ...v, ha: next }));
      return { name: vm.name, ha: vm.ha };
    },
  }),
  defineTaskOperation({
    name: 'vm.protect',
    summary: 'keep a synchronous copy of a VM on a standby host (every write on both before it completes)',
    http: { method: 'POST', path: '/vms/:id/actions/protect' },
    input: z.strictObject({ id: VmRef, standby: Name.optional().describe('standby host (default: any with room)') }),
    permission: 'write',
    route: ownerOf,
    cli: { noun: 'vm', verb: 'protect', args: ['id'] },
    run: async ({ svc }, input) => {
      const vm = await svc.vms.get(input.id);
      await svc.agent.protection.checkProtect(vm.id, input.standby ?? null);
      return {
        title: `protect ${vm.name}${input.standby ? ` on ${input.standby}` : ''}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: (t) => svc.agent.protection.protect(vm.id, input.standby ?? null, t),
      };
    },
  }),
  defineTaskOperation({
    name: 'vm.unprotect',
    summary: 'end the mirroring of a VM and drop its standby copy',
    http: { method: 'POST', path: '/vms/:id/actions/unprotect' },
    input: z.strictObject({ id: VmRef }),
    permission: 'write',
    route: ownerOf,
    cli: { noun: 'vm', verb: 'unprotect', args: ['id'] },
    run: async ({ svc }, input) => {
      const vm = await svc.vms.get(input.id);
      return {
        title: `unprotect ${vm.name}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: (t) => svc.agent.protection.unprotect(vm.id, t),
      };
    },
  }),
  defineTaskOperation({
    name: 'vm.failover',
    summary: 'move a protected VM to its standby host with no data loss (planned failover)',
    http: { method: 'POST', path: '/vms/:id/actions/failover' },
    input: z.strictObject({ id: VmRef }),
    permission: 'write',
    route: ownerOf,
    cli: { noun: 'vm', verb: 'failover', args: ['id'] },
    run: async ({ svc }, input) => {
      const vm = await svc.vms.get(input.id);
      if (!vm.protection)
        throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`, {
          status: 409,
          hint: `protect it first: flightdeck vm protect ${vm.name}`,
        });
      return {
        title: `failover ${vm.name}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: (t) => svc.agent.protection.plannedFailover(vm.id, t),
      };
    },
  }),
  defineOperation({
    name: 'vm.protection.prepare',
    summary: 'internal: a standby host serves fresh copies of a VM disks for its primary to mirror into',
    http: { method: 'POST', path: '/vms/:id/protection/prepare' },
    input: z.strictObject({ id: z.uuid(), primary: Name, disks: z.array(DiskPlan).max(64) }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, input) => svc.agent.protection.prepareStandby(input),
  }),
  defineOperation({
    name: 'vm.protection.release',
    summary: 'internal: a standby host drops its copy of a VM',
    http: { method: 'POST', path: '/vms/:id/protection/release' },
    input: z.strictObject({ id: z.uuid() }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, { id }) => svc.agent.protection.release(id),
  }),
  defineOperation({
    name: 'vm.protection.takeover',
    summary: 'internal: the standby of a lost host fences its copy and runs the VM from it',
    http: { method: 'POST', path: '/vms/:id/protection/takeover' },
    input: z.strictObject({ id: z.uuid(), from: Name }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, input) => svc.agent.protection.takeover(input),
  }),
  defineOperation({
    name: 'vm.protection.handover',
    summary: 'internal: planned failover, the standby starts an incoming QEMU on its copy',
    http: { method: 'POST', path: '/vms/:id/protection/handover' },
    input: z.strictObject({ id: z.uuid(), from: Name }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, input) => svc.agent.protection.handover(input),
  }),
  defineOperation({
    name: 'vm.protection.handover-finish',
    summary: 'internal: planned failover, the standby runs the guest',
    http: { method: 'POST', path: '/vms/:id/protection/handover-finish' },
    input: z.strictObject({ id: z.uuid() }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, { id }) => svc.agent.protection.handoverFinish(id),
  }),
];
