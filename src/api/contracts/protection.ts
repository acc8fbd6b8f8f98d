/** Contracts of high availability and VM mirroring: vm ha, protect, unprotect, failover. */
import { z } from 'zod';
import { operation, taskOperation } from '../../core/contract.js';
import { Name } from '../../cluster/state/model.js';
import { Loose, VmRef } from './common.js';

export const vmHa = operation({
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
  output: z.object({ name: z.string(), ha: Loose.nullable() }),
  permission: 'write',
  errors: ['FD_VM_NOT_FOUND', 'FD_BAD_REQUEST'],
  cli: { noun: 'vm', verb: 'ha', args: ['id'], flags: { priority: { value: 'N' }, maxRestarts: { value: 'N' } } },
});

export const vmProtect = taskOperation({
  name: 'vm.protect',
  summary: 'keep a synchronous copy of a VM on a standby host (every write on both before it completes)',
  http: { method: 'POST', path: '/vms/:id/actions/protect' },
  input: z.strictObject({ id: VmRef, standby: Name.optional().describe('standby host (default: any with room)') }),
  output: Loose,
  permission: 'write',
  errors: [
    'FD_PROTECT_SAME_HOST',
    'FD_HOST_NOT_FOUND',
    'FD_HOST_UNAVAILABLE',
    'FD_NO_STANDBY_HOST',
    'FD_PROTECTION_DEGRADED',
  ],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'protect', args: ['id'] },
});

export const vmUnprotect = taskOperation({
  name: 'vm.unprotect',
  summary: 'end the mirroring of a VM and drop its standby copy',
  http: { method: 'POST', path: '/vms/:id/actions/unprotect' },
  input: z.strictObject({ id: VmRef }),
  output: z.object({ unprotected: z.string() }),
  permission: 'write',
  errors: ['FD_VM_NOT_PROTECTED'],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'unprotect', args: ['id'] },
});

export const vmFailover = taskOperation({
  name: 'vm.failover',
  summary: 'move a protected VM to its standby host with no data loss (planned failover)',
  http: { method: 'POST', path: '/vms/:id/actions/failover' },
  input: z.strictObject({ id: VmRef }),
  output: z.object({ from: z.string(), to: z.string(), pausedMs: z.number() }),
  permission: 'write',
  errors: ['FD_VM_NOT_PROTECTED', 'FD_PROTECTION_NOT_READY', 'FD_FAILOVER_FAILED'],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'failover', args: ['id'] },
});

export const protectionContracts = [vmHa, vmProtect, vmUnprotect, vmFailover];
