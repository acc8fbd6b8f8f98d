/** Handlers of HA and VM mirroring (contracts/protection.ts). */
import { FdError } from '../../core/errors.js';
import { vmFailover, vmHa, vmProtect, vmUnprotect } from '../contracts/protection.js';
import { handle, handleTask, type Binding } from '../handler.js';

export const protectionHandlers: Binding[] = [
  handle(vmHa, async ({ svc }, input) => {
    if (input.enable && input.disable) throw new FdError('FD_BAD_REQUEST', 'pass --enable or --disable, not both');
    const { value: vm } = await svc.vms.update(input.id, (v) => {
      const cur = v.ha ?? { enabled: false, priority: 0, maxRestarts: 3 };
      return {
        ...v,
        ha: {
          enabled: input.enable ? true : input.disable ? false : cur.enabled,
          priority: input.priority ?? cur.priority,
          maxRestarts: input.maxRestarts ?? cur.maxRestarts,
        },
      };
    });
    return { name: vm.name, ha: vm.ha };
  }),
  handleTask(vmProtect, async ({ svc }, input) => {
    const vm = await svc.vms.get(input.id);
    await svc.agent.protection.checkProtect(vm.id, input.standby ?? null);
    return {
      title: `protect ${vm.name}${input.standby ? ` on ${input.standby}` : ''}`,
      target: { kind: 'vm', id: vm.id, name: vm.name },
      work: (t) => svc.agent.protection.protect(vm.id, input.standby ?? null, t),
    };
  }),
  handleTask(vmUnprotect, async ({ svc }, input) => {
    const vm = await svc.vms.get(input.id);
    return {
      title: `unprotect ${vm.name}`,
      target: { kind: 'vm', id: vm.id, name: vm.name },
      work: (t) => svc.agent.protection.unprotect(vm.id, t),
    };
  }),
  handleTask(vmFailover, async ({ svc }, input) => {
    const vm = await svc.vms.get(input.id);
    if (!vm.protection)
      throw new FdError('FD_VM_NOT_PROTECTED', `${vm.name} is not protected`, {
        hint: `protect it first: flightdeck vm protect ${vm.name}`,
      });
    return {
      title: `failover ${vm.name}`,
      target: { kind: 'vm', id: vm.id, name: vm.name },
      work: (t) => svc.agent.protection.plannedFailover(vm.id, t),
    };
  }),
];
