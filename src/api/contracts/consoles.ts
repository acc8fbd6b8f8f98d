/** Contracts of console tickets and the metrics history behind the web UI's graphs. */
import { z } from 'zod';
import { operation } from '../../core/contract.js';
import { Name } from '../../cluster/state/model.js';
import { Loose, VmRef } from './common.js';

export const vmConsoleTicket = operation({
  name: 'vm.console-ticket',
  summary: "a single-use ticket (30 s) for a VM's serial or VNC console WebSocket (?ticket=)",
  http: { method: 'POST', path: '/vms/:id/console-ticket' },
  input: z.strictObject({ id: VmRef }),
  output: z.object({ ticket: z.string(), expiresAt: z.string(), vmId: z.string() }),
  permission: 'write',
  status: 201,
  errors: ['FD_VM_NOT_FOUND'],
  cli: { noun: 'vm', verb: 'console-ticket', args: ['id'] },
});

const History = z.object({ intervalMs: z.number(), samples: z.array(Loose) });

export const vmMetrics = operation({
  name: 'vm.metrics',
  summary: "the last hour of a VM's CPU, memory, disk and network, sampled every 10 s by its host",
  http: { method: 'GET', path: '/vms/:id/metrics' },
  input: z.strictObject({ id: VmRef }),
  output: History,
  permission: 'read',
  errors: ['FD_VM_NOT_FOUND'],
  route: { to: 'owner', field: 'id' },
  cli: { noun: 'vm', verb: 'metrics', args: ['id'] },
});

export const hostMetrics = operation({
  name: 'host.metrics',
  summary: "the last hour of a host's load and memory, sampled every 10 s",
  http: { method: 'GET', path: '/hosts/:name/metrics' },
  input: z.strictObject({ name: Name }),
  output: History,
  permission: 'read',
  errors: ['FD_HOST_NOT_FOUND'],
  route: { to: 'host', field: 'name' },
  cli: { noun: 'host', verb: 'metrics', args: ['name'] },
});

export const consoleContracts = [vmConsoleTicket, vmMetrics, hostMetrics];
