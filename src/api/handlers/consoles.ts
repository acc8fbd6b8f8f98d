/** Handlers of console tickets and the metrics history (contracts/consoles.ts). */
import { FdError } from '../../core/errors.js';
import { ConsoleTickets } from '../console-tickets.js';
import { hostMetrics, vmConsoleTicket, vmMetrics } from '../contracts/consoles.js';
import { handle, type Binding } from '../handler.js';

export const consoleHandlers: Binding[] = [
  handle(vmConsoleTicket, async ({ svc, caller }, { id }) => {
    const vm = await svc.vms.get(id);
    return new ConsoleTickets(svc.store).issue(vm.id, caller);
  }),
  handle(vmMetrics, async ({ svc }, { id }) => svc.history.vm((await svc.vms.get(id)).id)),
  handle(hostMetrics, async ({ svc }, { name }) => {
    if (!svc.hosts.record(name))
      throw new FdError('FD_HOST_NOT_FOUND', `no host ${name}`, { hint: 'see "flightdeck host list"' });
    return svc.history.hostSamples();
  }),
];
