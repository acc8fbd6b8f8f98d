import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLock } from '../../core/keyed-lock.js';
import { silentLogger } from '../../core/log.js';
import { FakeRuntime } from '../runtime/fake.js';
import { memoryState, seedHosts, vmRecord } from '../state/testing.js';
import { Reconciler, reconcileAction } from './reconcile.js';
import { StatusPublisher } from './status.js';
import type { Power } from './power.js';

test('reconcileAction: what to do for each desired state and each thing found', () => {
  const a = (
    desired: 'running' | 'stopped',
    st: Parameters<typeof reconcileAction>[1],
    boot = false,
    guarded = false,
  ) => reconcileAction(desired, st, { boot, guarded });
  assert.equal(a('running', 'stopped'), 'start', 'should run and is simply not there');
  assert.equal(a('running', 'crashed'), 'report', "a crash is the runner's to handle by policy");
  assert.equal(a('running', 'starting'), 'report');
  assert.equal(a('running', 'unknown'), 'report');
  assert.equal(a('running', 'crashed', true, false), 'report', 'a plain VM that crashed stays crashed at boot');
  assert.equal(a('running', 'crashed', true, true), 'start', 'an HA VM whose host came back starts again');
  assert.equal(a('running', 'crashed', false, true), 'report', 'only at the first pass after a start');
  assert.equal(a('stopped', 'running'), 'stop');
  assert.equal(a('stopped', 'paused'), 'stop');
  assert.equal(a('running', 'running'), 'keep');
  assert.equal(a('running', 'paused'), 'keep');
  assert.equal(a('stopped', 'stopped'), 'keep');
  assert.equal(a('stopped', 'crashed'), 'keep');
});

async function setup() {
  const { store, state } = await memoryState();
  await seedHosts(store, [{ name: 'h1', alive: true }]);
  const runtime = new FakeRuntime();
  const locks = new KeyedLock();
  const status = new StatusPublisher({ hostName: 'h1', state });
  const launched: string[] = [];
  const power = { launch: async (vm: { id: string }) => void launched.push(vm.id) } as unknown as Power;
  const held: string[] = [];
  const r = new Reconciler({
    hostName: 'h1',
    state,
    runtime,
    power,
    status,
    locks,
    log: silentLogger,
    held: (id) => held.push(id),
    closed: () => false,
  });
  return { store, state, runtime, locks, r, launched, held };
}

test('Reconciler: a VM that should run is started, one that should not is stopped, others are left alone', async () => {
  const { state, runtime, r, launched } = await setup();
  const [up] = await state.vms.create(vmRecord({ desired: 'running' }));
  const [down] = await state.vms.create(vmRecord({ desired: 'stopped' }));
  const [elsewhere] = await state.vms.create(vmRecord({ desired: 'running', host: 'h2' }));
  runtime.running(down!.id);
  for (const vm of [up!, down!, elsewhere!]) await r.reconcile(vm.id);
  assert.deepEqual(launched, [up!.id], 'only the VM of this host that should run was started');
  assert.ok(runtime.calls.includes(`stop ${down!.id}`));
  assert.equal((await runtime.status(down!.id)).state, 'stopped');
  assert.equal(state.vms.status(down!.id)?.state, 'stopped', 'the stop was published');
  assert.equal(state.vms.status(elsewhere!.id), undefined, "nothing was said for another host's VM");
});

test('Reconciler: a guest that powered itself off becomes desired-stopped, unless its policy is always', async () => {
  const { state, runtime, r } = await setup();
  const [a] = await state.vms.create(vmRecord({ desired: 'running', restartPolicy: 'never' }));
  const [b] = await state.vms.create(vmRecord({ desired: 'running', restartPolicy: 'always' }));
  for (const vm of [a!, b!]) {
    runtime.running(vm.id);
    await r.onRuntimeChange(vm.id, { state: 'stopped', pid: null, lastError: null, guestShutdown: true });
  }
  assert.equal(state.vms.cached(a!.id)?.value.desired, 'stopped');
  assert.equal(state.vms.cached(b!.id)?.value.desired, 'running');
  assert.equal(state.vms.status(a!.id)?.state, 'stopped');
});

test('Reconciler: a restart the gate held is handed to the fence guard', async () => {
  const { state, r, held } = await setup();
  const [vm] = await state.vms.create(vmRecord({ desired: 'running' }));
  await r.onRuntimeChange(vm!.id, { state: 'crashed', pid: null, lastError: 'x', restartHeld: true });
  assert.deepEqual(held, [vm!.id]);
});

test('Reconciler: run dirs of VMs owned elsewhere go, a running copy is stopped first; migrating VMs stay', async () => {
  const { state, runtime, r } = await setup();
  const [mine] = await state.vms.create(vmRecord({ desired: 'running' }));
  const [moving] = await state.vms.create(vmRecord({ host: 'h2' }));
  await state.migrations.put({
    vmId: moving!.id,
    from: 'h2',
    to: 'h1',
    phase: 'copying',
    at: new Date().toISOString(),
  });
  runtime.running(mine!.id);
  runtime.running('11111111-1111-4111-8111-111111111111');
  runtime.running(moving!.id);
  await r.sweepForeign(new Set([mine!.id]));
  assert.ok(runtime.calls.includes('stop 11111111-1111-4111-8111-111111111111'));
  assert.ok(runtime.calls.includes('cleanup 11111111-1111-4111-8111-111111111111'));
  assert.ok(!runtime.calls.some((c) => c.endsWith(mine!.id)), 'its own VM is untouched');
  assert.ok(!runtime.calls.some((c) => c.endsWith(moving!.id)), 'a VM arriving by migration is untouched');
});
