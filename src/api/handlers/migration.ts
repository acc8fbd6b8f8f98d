/** Handlers of live migration and host maintenance (contracts/migration.ts). */
import { FdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import { DEFAULT_TUNABLES, type MigrationResult, type MigrationTunables } from '../../cluster/migration/plan.js';
import type { FailoverResult } from '../../cluster/protection/planned-failover.js';
import { hostActivate, hostEvacuate, vmMigrate } from '../contracts/migration.js';
import { handle, handleTask, type Binding } from '../handler.js';

export const migrationHandlers: Binding[] = [
  handleTask(vmMigrate, async ({ svc }, input) => {
    const vm = await svc.vms.get(input.id);
    if (vm.state !== 'running' && vm.state !== 'paused')
      throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}; live migration moves running VMs`);
    if (input.to === vm.host) throw new FdError('FD_MIGRATION_SAME_HOST', `VM ${vm.name} already runs on ${vm.host}`);
    if (vm.protection)
      throw new FdError('FD_VM_PROTECTED', `VM ${vm.name} is mirrored to ${vm.protection.standby ?? 'a standby'}`, {
        hint: `move it to its standby with "flightdeck vm failover ${vm.name}", or "vm unprotect" it first`,
      });
    const tunables: MigrationTunables = {
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
      work: (t) => svc.agent.migration.source.migrate(vm.id, input.to, tunables, t),
    };
  }),
  handleTask(hostEvacuate, async ({ svc }, { name }) => ({
    title: `evacuate ${name}`,
    target: { kind: 'host', id: name, name },
    work: async (t) => {
      await svc.agent.setHostState('maintenance');
      t.log(`${name} is in maintenance: no new VMs go there`);
      const mine = svc.vms.list().filter((v) => v.host === name);
      const running = mine.filter((v) => v.state === 'running' || v.state === 'paused');
      const moved: (MigrationResult | FailoverResult)[] = [];
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
            moved.push(await svc.agent.migration.source.migrate(vm.id, undefined, DEFAULT_TUNABLES, t));
          }
        } catch (err) {
          failed.push({ vm: vm.name, error: (err as Error).message });
          t.log(`${vm.name} could not move: ${(err as Error).message}`);
        }
      }
      const stayed = mine.filter((v) => !running.includes(v)).map((v) => v.name);
      if (stayed.length) t.log(`stopped VMs keep their disks here: ${stayed.join(', ')}`);
      if (failed.length)
        throw new FdError(
          'FD_EVACUATE_INCOMPLETE',
          `${failed.length} VM(s) could not be moved off ${name}: ${failed.map((f) => `${f.vm} (${f.error})`).join('; ')}`,
          { hint: 'free capacity on other hosts, then run evacuate again' },
        );
      return { host: name, state: 'maintenance', moved: moved.map((m) => ({ ...m })), stoppedVmsLeft: stayed };
    },
  })),
  handle(hostActivate, async ({ svc }) => {
    const { certPem: _p, ...h } = await svc.agent.setHostState('online');
    return h;
  }),
];
