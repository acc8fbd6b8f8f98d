import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { z } from 'zod';
import type { Contract } from '../../core/contract.js';
import { FdError } from '../../core/errors.js';
import { KeyedLock } from '../../core/keyed-lock.js';
import { silentLogger } from '../../core/log.js';
import type { Peers } from '../peer/client.js';
import type { DiskFiles } from '../provisioning/disks.js';
import { FakeRuntime } from '../runtime/fake.js';
import type { MigrationIntent } from '../state/model.js';
import { memoryState, seedHosts, vmRecord } from '../state/testing.js';
import { recoverMigrations, recoveryStep } from './recovery.js';
import { MigrationSource } from './source.js';

const intent = (over: Partial<MigrationIntent> = {}): MigrationIntent => ({
  vmId: 'x',
  from: 'h1',
  to: 'h2',
  phase: 'copying',
  at: new Date().toISOString(),
  ...over,
});

test('recoveryStep: the source finishes or undoes its own migrations, and only those', () => {
  const vm = vmRecord({ host: 'h1' });
  const o = { hostName: 'h1', active: false };
  assert.equal(recoveryStep(intent(), undefined, o), 'forget', 'the VM is gone');
  assert.equal(recoveryStep(intent(), vm, o), 'undo', 'the target never ran the guest');
  assert.equal(recoveryStep(intent({ phase: 'finishing' }), vm, o), 'resolve-finishing');
  assert.equal(recoveryStep(intent({ phase: 'aborting' }), vm, o), 'abort-target');
  assert.equal(recoveryStep(intent({ from: 'h3' }), vm, o), 'skip', "another host's migration");
  assert.equal(recoveryStep(intent(), vmRecord({ host: 'h2' }), o), 'skip', 'the move completed already');
  assert.equal(recoveryStep(intent(), vm, { ...o, active: true }), 'skip', 'running in this daemon now');
});

/** Peers that answer each internal call by its name. */
function scriptedPeers(answers: Record<string, (input: unknown) => unknown>): Peers & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async call<I extends z.ZodObject, O extends z.ZodType>(
      to: unknown,
      c: Contract<I, O>,
      input: z.input<I>,
    ): Promise<z.output<O>> {
      calls.push(`${String(to)} ${c.name}`);
      const a = answers[c.name];
      if (!a) throw new FdError('FD_HOST_UNREACHABLE', `host ${String(to)} does not answer`);
      return a(input) as z.output<O>;
    },
  };
}

/** Background retries (a target out of reach is asked again) end when the tests do. */
let closed = false;
after(() => {
  closed = true;
});

async function setup(peers: Peers & { calls: string[] }) {
  const { store, state } = await memoryState();
  await seedHosts(store, [
    { name: 'h1', alive: true },
    { name: 'h2', alive: true },
  ]);
  const runtime = new FakeRuntime();
  const locks = new KeyedLock();
  const removed: string[] = [];
  const disks = { removeVmDir: async (id: string) => void removed.push(id), plans: () => [] } as unknown as DiskFiles;
  const source = new MigrationSource({
    hostName: 'h1',
    state,
    runtime,
    disks,
    peers,
    locks,
    log: silentLogger,
    closed: () => closed,
    movedAway: () => undefined,
  });
  const recover = () => recoverMigrations({ hostName: 'h1', state, runtime, locks, log: silentLogger, source });
  return { store, state, runtime, locks, source, recover, removed };
}

test('recover, copying: the migration is cancelled, the guest resumes here and the target removes its side', async () => {
  const peers = scriptedPeers({ 'vm.migration.abort': () => ({ aborted: true }) });
  const { state, runtime, recover } = await setup(peers);
  const [vm] = await state.vms.create(vmRecord({ desired: 'running' }));
  const qmp = runtime.running(vm!.id, 'paused');
  await state.migrations.put(intent({ vmId: vm!.id }));
  await recover();
  assert.ok(qmp.commands().includes('migrate_cancel'));
  assert.equal(qmp.status, 'running', 'the source runs the guest again');
  assert.deepEqual(peers.calls, ['h2 vm.migration.abort']);
  assert.equal(await state.migrations.get(vm!.id), undefined, 'nothing is left to recover');
  assert.equal(state.vms.cached(vm!.id)?.value.host, 'h1');
});

test('recover, copying with the target out of reach: the source runs, the intent stays as aborting', async () => {
  const peers = scriptedPeers({});
  const { state, runtime, recover } = await setup(peers);
  const [vm] = await state.vms.create(vmRecord({ desired: 'running' }));
  const qmp = runtime.running(vm!.id, 'paused');
  await state.migrations.put(intent({ vmId: vm!.id }));
  await recover();
  assert.equal(qmp.status, 'running');
  assert.equal((await state.migrations.get(vm!.id))?.phase, 'aborting', 'the target is asked again later');
});

test('recover, finishing and the target ran the guest: the move completes, ownership and disks follow', async () => {
  const peers = scriptedPeers({
    'vm.migration.abort': () => {
      throw new FdError('FD_MIGRATION_TARGET_RAN', 'the guest already runs on this host');
    },
    'vm.migration.state': () => ({ qemuStatus: 'running', diskPaths: { disk0: '/new/disk0.vhd' } }),
  });
  const { state, runtime, locks, recover, removed } = await setup(peers);
  const [vm] = await state.vms.create(vmRecord({ desired: 'running', disks: [] }));
  runtime.running(vm!.id, 'postmigrate');
  await state.migrations.put(intent({ vmId: vm!.id, phase: 'finishing' }));
  await recover();
  await locks.settled();
  assert.equal(state.vms.cached(vm!.id)?.value.host, 'h2', 'the target owns it now');
  assert.ok(runtime.calls.includes(`stop ${vm!.id}`), 'the paused source copy is gone');
  assert.deepEqual(removed, [vm!.id], "the source's disk files are removed");
  assert.equal(await state.migrations.get(vm!.id), undefined);
});

test('recover, finishing and the target aborted: the source resumes and keeps the VM', async () => {
  const peers = scriptedPeers({ 'vm.migration.abort': () => ({ aborted: true }) });
  const { state, runtime, locks, recover } = await setup(peers);
  const [vm] = await state.vms.create(vmRecord({ desired: 'running' }));
  const qmp = runtime.running(vm!.id, 'postmigrate');
  await state.migrations.put(intent({ vmId: vm!.id, phase: 'finishing' }));
  await recover();
  await locks.settled();
  assert.equal(qmp.status, 'running');
  assert.equal(state.vms.cached(vm!.id)?.value.host, 'h1');
  assert.ok(!peers.calls.includes('h2 vm.migration.state'));
});
