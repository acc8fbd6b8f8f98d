/** Console tickets and the metrics history behind the web UI's graphs. */
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { Name } from '../../cluster/state/model.js';
import { ConsoleTickets } from '../console-tickets.js';
import { defineOperation } from '../operation.js';
import { Loose, ownerOf } from './common.js';

const VmRef = z.string().min(1).max(64).describe('VM name or id');

export const consoleOperations = [
  defineOperation({
    name: 'vm.console-ticket',
    summary: "a single-use ticket (30 s) for a VM's serial or VNC console WebSocket (?ticket=)",
    http: { method: 'POST', path: '/vms/:id/console-ticket' },
    input: z.strictObject({ id: VmRef }),
    output: z.object({ ticket: z.string(), expiresAt: z.string(), vmId: z.string() }),
    permission: 'write',
    status: 201,
    cli: { noun: 'vm', verb: 'console-ticket', args: ['id'] },
    run: async ({ svc, caller }, { id }) => {
      const vm = await svc.vms.get(id);
      return new ConsoleTickets(svc.store).issue(vm.id, caller);
    },
  }),
  defineOperation({
    name: 'vm.metrics',
    summary: "the last hour of a VM's CPU, memory, disk and network, sampled every 10 s by its host",
    http: { method: 'GET', path: '/vms/:id/metrics' },
    input: z.strictObject({ id: VmRef }),
    output: z.object({ intervalMs: z.number(), samples: z.array(Loose) }),
    permission: 'read',
    cli: { noun: 'vm', verb: 'metrics', args: ['id'] },
    route: ownerOf,
    run: async ({ svc }, { id }) => svc.history.vm((await svc.vms.get(id)).id),
  }),
  defineOperation({
    name: 'host.metrics',
    summary: "the last hour of a host's load and memory, sampled every 10 s",
    http: { method: 'GET', path: '/hosts/:name/metrics' },
    input: z.strictObject({ name: Name }),
    output: z.object({ intervalMs: z.number(), samples: z.array(Loose) }),
    permission: 'read',
    cli: { noun: 'host', verb: 'metrics', args: ['name'] },
    route: async ({ svc }, { name }) => {
      if (!(await svc.catalog.listHosts()).some((h) => h.name === name))
        throw new FdError('FD_HOST_NOT_FOUND', `no host ${name}`, { hint: 'see "flightdeck host list"' });
      return { host: name };
    },
    run: async ({ svc }) => svc.history.hostSamples(),
  }),
];
