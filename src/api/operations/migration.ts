/** Live migration and host maintenance: the user-facing verbs and the internal target-side steps. */
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import { Name, Size } from '../../cluster/state/model.js';
import { DEFAULT_TUNABLES } from '../../cluster/migration/transfer.js';
import type { MigrationResult } from '../../cluster/migration/transfer.js';
import { defineOperation, defineTaskOperation } from '../operation.js';
import { Bool, Loose, ownerOf } from './common.js';

const DiskPlan = z.strictObject({ id: z.string(), sizeBytes: z.number().int(), baseImage: z.string().nullable() });

export const migrationOperations = [
  defineTaskOperation({
    name: 'vm.migrate',
    summary: 'move a running VM to another host, disks and all, while it runs',
    http: { method: 'POST', path: '/vms/:id/actions/migrate' },
    input: z.strictObject({
      id: z.string().min(1).max(64).describe('VM name or id'),
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
    permission: 'write',
    route: ownerOf,
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
    run: async ({ svc }, input) => {
      const vm = await svc.vms.get(input.id);
      if (vm.state !== 'running' && vm.state !== 'paused') {
        throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}; live migration moves running VMs`, {
          status: 409,
        });
      }
      if (input.to === vm.host)
        throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs on ${vm.host}`, { status: 409 });
      if (vm.protection)
        throw new FdError('FD_VM_PROTECTED', `VM ${vm.name} is mirrored to ${vm.protection.standby ?? 'a standby'}`, {
          status: 409,
          hint: `move it to its standby with "flightdeck vm failover ${vm.name}", or "vm unprotect" it first`,
        });
      const tunables = {
        bandwidthBytesPerS: input.bandwidth ?? DEFAULT_TUNABLES.bandwidthBytesPerS,
        downtimeLimitMs: input.downtimeLimit ? parseDurationMs(input.downtimeLimit) : DEFAULT_TUNABLES.downtimeLimitMs,
        autoConverge: input.autoConverge ?? DEFAULT_TUNABLES.autoConverge,
        xbzrle: input.xbzrle ?? DEFAULT_TUNABLES.xbzrle,
        multifd: input.multifd ?? DEFAULT_TUNABLES.multifd,
        postcopy: input.postcopy ?? DEFAULT_TUNABLES.postcopy,
        stallTimeoutMs: input.stallTimeout ? parseDurationMs(input.stallTimeout) : DEFAULT_TUNABLES.stallTimeoutMs,
      };
      return {
        title: `migrate ${vm.name}${input.to ? ` to ${input.to}` : ''}`,
        target: { kind: 'vm', id: vm.id, name: vm.name },
        work: (t) => svc.agent.migrateVm(vm.id, input.to, tunables, t),
      };
    },
  }),
  defineOperation({
    name: 'vm.migration.prepare',
    summary: 'internal: the target host of a migration prepares disks and an incoming QEMU',
    http: { method: 'POST', path: '/vms/:id/migration/prepare' },
    input: z.strictObject({
      id: z.uuid(),
      source: Name,
      disks: z.array(DiskPlan).max(64),
      multifd: z.boolean().optional(),
      postcopy: z.boolean().optional(),
    }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, input) => svc.agent.prepareIncoming(input),
  }),
  defineOperation({
    name: 'vm.migration.finish',
    summary: 'internal: the target host of a migration runs the guest',
    http: { method: 'POST', path: '/vms/:id/migration/finish' },
    input: z.strictObject({ id: z.uuid() }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, { id }) => svc.agent.finishIncoming(id),
  }),
  defineOperation({
    name: 'vm.migration.state',
    summary: 'internal: whether the target of a migration runs the guest (recovery after a restart)',
    http: { method: 'POST', path: '/vms/:id/migration/state' },
    input: z.strictObject({ id: z.uuid() }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, { id }) => svc.agent.incomingState(id),
  }),
  defineOperation({
    name: 'vm.migration.abort',
    summary: 'internal: the target host of a failed migration removes what it prepared',
    http: { method: 'POST', path: '/vms/:id/migration/abort' },
    input: z.strictObject({ id: z.uuid() }),
    output: Loose,
    permission: 'admin',
    run: ({ svc }, { id }) => svc.agent.abortIncoming(id),
  }),
  defineTaskOperation({
    name: 'host.evacuate',
    summary: 'put a host in maintenance and live-migrate every running VM off it',
    http: { method: 'POST', path: '/hosts/:name/actions/evacuate' },
    input: z.strictObject({ name: Name.describe('host name') }),
    permission: 'admin',
    route: async (_ctx, { name }) => ({ host: name }),
    cli: { noun: 'host', verb: 'evacuate', args: ['name'] },
    run: async ({ svc }, { name }) => ({
      title: `evacuate ${name}`,
      target: { kind: 'host', id: name, name },
      work: async (t) => {
        await svc.agent.setHostState('maintenance');
        t.log(`${name} is in maintenance: no new VMs go there`);
        const mine = (await svc.vms.list()).filter((v) => v.host === name);
        const running = mine.filter((v) => v.state === 'running' || v.state === 'paused');
        const moved: (MigrationResult | { from: string; to: string; pausedMs: number })[] = [];
        const failed: { vm: string; error: string }[] = [];
        for (const [i, vm] of running.entries()) {
          t.progress({ done: i, total: running.length, unit: 'items', ratePerS: 0, etaS: null, message: vm.name });
          try {
            if (vm.protection) {
              // A mirrored VM moves to its standby, where its disks already are.
              t.log(`failing ${vm.name} over to its standby (${i + 1}/${running.length})`);
              moved.push(await svc.agent.protection.plannedFailover(vm.id, t));
            } else {
              t.log(`migrating ${vm.name} (${i + 1}/${running.length})`);
              moved.push(await svc.agent.migrateVm(vm.id, undefined, DEFAULT_TUNABLES, t));
            }
          } catch (err) {
            failed.push({ vm: vm.name, error: (err as Error).message });
            t.log(`${vm.name} could not move: ${(err as Error).message}`);
          }
        }
        const stayed = mine.filter((v) => !running.includes(v)).map((v) => v.name);
        if (stayed.length) t.log(`stopped VMs keep their disks here: ${stayed.join(', ')}`);
        if (failed.length) {
          throw new FdError(
            'FD_EVACUATE_INCOMPLETE',
            `${failed.length} VM(s) could not be moved off ${name}: ${failed.map((f) => `${f.vm} (${f.error})`).join('; ')}`,
            {
              hint: 'free capacity on other hosts, then run evacuate again',
            },
          );
        }
        return { host: name, state: 'maintenance', moved: moved.map((m) => ({ ...m })), stoppedVmsLeft: stayed };
      },
    }),
  }),
  defineOperation({
    name: 'host.activate',
    summary: 'bring a host out of maintenance: placement uses it again',
    http: { method: 'POST', path: '/hosts/:name/actions/activate' },
    input: z.strictObject({ name: Name.describe('host name') }),
    output: Loose,
    permission: 'admin',
    route: async (_ctx, { name }) => ({ host: name }),
    cli: { noun: 'host', verb: 'activate', args: ['name'] },
    run: async ({ svc }) => {
      const { certPem: _p, ...h } = await svc.agent.setHostState('online');
      return h;
    },
  }),
];
