/** Contracts of live migration and host maintenance. */
import { z } from 'zod';
import { operation, taskOperation } from '../../core/contract.js';
import { Name, Size } from '../../cluster/state/model.js';
import { Bool, Loose, VmRef } from './common.js';

export const vmMigrate = taskOperation({
  name: 'vm.migrate',
  summary: 'move a running VM to another host, disks and all, while it runs',
  http: { method: 'POST', path: '/vms/:id/actions/migrate' },
  input: z.strictObject({
    id: VmRef,
    to: Name.optional().describe('target host (default: placement chooses)'),
    bandwidth: Size.optional().describe('memory bandwidth per second, e.g. 1G (default: unlimited)'),
    downtimeLimit: z.string().max(16).optional().describe('longest pause allowed at switch-over, e.g. 300ms'),
    autoConverge: Bool.optional().describe('slow the guest down if it dirties memory faster than it moves'),
    xbzrle: Bool.optional().describe('compress re-sent pages'),
    multifd: Bool.optional().describe('several connections for memory'),
    postcopy: Bool.optional().describe('switch to post-copy when pre-copy does not converge (off by default)'),
    stallTimeout: z
      .string()
      .max(16)
      .optional()
      .describe('give up when no data moves for this long, e.g. 10s (a cut link stalls without an error)'),
  }),
  output: Loose,
  permission: 'write',
  errors: [
    'FD_VM_NOT_RUNNING',
    'FD_MIGRATION_SAME_HOST',
    'FD_VM_PROTECTED',
    'FD_HOST_UNAVAILABLE',
    'FD_NO_HOST_WITH_ROOM',
    'FD_MIGRATION_FAILED',
    'FD_MIGRATION_STALLED',
  ],
  route: { to: 'owner', field: 'id' },
  cli: {
    noun: 'vm',
    verb: 'migrate',
    args: ['id'],
    flags: {
      bandwidth: { value: 'SIZE' },
      downtimeLimit: { value: 'DURATION' },
      stallTimeout: { value: 'DURATION' },
    },
  },
});

export const hostEvacuate = taskOperation({
  name: 'host.evacuate',
  summary: 'put a host in maintenance and live-migrate every running VM off it',
  http: { method: 'POST', path: '/hosts/:name/actions/evacuate' },
  input: z.strictObject({ name: Name.describe('host name') }),
  output: Loose,
  permission: 'admin',
  errors: ['FD_HOST_NOT_FOUND', 'FD_EVACUATE_INCOMPLETE'],
  route: { to: 'host', field: 'name' },
  cli: { noun: 'host', verb: 'evacuate', args: ['name'] },
});

export const hostActivate = operation({
  name: 'host.activate',
  summary: 'bring a host out of maintenance: placement uses it again',
  http: { method: 'POST', path: '/hosts/:name/actions/activate' },
  input: z.strictObject({ name: Name.describe('host name') }),
  output: Loose,
  permission: 'admin',
  errors: ['FD_HOST_NOT_FOUND'],
  route: { to: 'host', field: 'name' },
  cli: { noun: 'host', verb: 'activate', args: ['name'] },
});

export const migrationContracts = [vmMigrate, hostEvacuate, hostActivate];
