import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeJsonFile } from '../../core/atomic-file.js';
import { KeyedLock } from '../../core/keyed-lock.js';
import { silentLogger } from '../../core/log.js';
import { FakeRuntime } from '../runtime/fake.js';
import { keys } from '../state/keys.js';
import { memoryState, seedHosts, vmRecord } from '../state/testing.js';
import { keeperStatePath, writeGuarded } from './fence/files.js';
import { afterFence, Fencing, leaseHeld, mayRestart } from './fencing.js';
import type { VmRecord } from '../state/model.js';

const TTL = 4000;

test('leaseHeld: the keeper says so and its last renewal is younger than the TTL', () => {
  const now = Date.parse('2026-12-04T10:00:10Z');
  const st = (leaseOk: boolean, lastOkAt: string | null) => ({
    pid: 1,
    leaseOk,
    lastOkAt,
    since: '',
    fencedAt: null,
    fenced: [],
  });
  assert.equal(leaseHeld(st(true, '2026-12-04T10:00:08Z'), now, TTL), true);
  assert.equal(leaseHeld(st(true, '2026-12-04T10:00:05Z'), now, TTL), false, 'a keeper that stopped writing');
  assert.equal(leaseHeld(st(false, '2026-12-04T10:00:09Z'), now, TTL), false, 'the keeper fenced');
  assert.equal(leaseHeld(st(true, null), now, TTL), false);
  assert.equal(leaseHeld(undefined, now, TTL), false, 'no keeper state: not held');
});

test('mayRestart: only while this host owns the VM, and a guarded one only with a fresh lease', () => {
  const m = (owner: string | undefined, guarded: boolean, lease: boolean) =>
    mayRestart({ owner, hostName: 'h1', guarded, leaseHeld: lease });
  assert.equal(m('h1', false, false), true);
  assert.equal(m('h1', true, true), true);
  assert.equal(m('h1', true, false), false, 'guarded without a lease: it may run elsewhere already');
  assert.equal(m('h2', false, true), false, 'failed over while this host was away');
  assert.equal(m(undefined, false, true), false, 'owner unknown (etcd out of reach) means no');
});

test('afterFence: restart what this host kept, clean up what moved, leave what runs or was stopped', () => {
  const f = (runtime: 'running' | 'crashed', owner: string | undefined, desired: VmRecord['desired'], alive: boolean) =>
    afterFence({ runtime, owner, hostName: 'h1', desired, alive });
  assert.equal(f('running', 'h1', 'running', true), 'nothing');
  assert.equal(f('crashed', 'h2', 'running', true), 'cleanup');
  assert.equal(f('crashed', undefined, 'running', true), 'cleanup', 'deleted meanwhile');
  assert.equal(f('crashed', 'h1', 'stopped', true), 'nothing');
  assert.equal(f('crashed', 'h1', 'running', false), 'wait');
  assert.equal(f('crashed', 'h1', 'running', true), 'restart');
});

async function fencingSetup() {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-fence-'));
  const { store, state } = await memoryState();
  await seedHosts(store, [
    { name: 'h1', alive: true },
    { name: 'h2', alive: true },
  ]);
  const runtime = new FakeRuntime();
  const started: string[] = [];
  const fencing = new Fencing({
    hostName: 'h1',
    dataDir,
    state,
    runtime,
    locks: new KeyedLock(),
    log: silentLogger,
    ttlMs: TTL,
    start: async (vm) => void started.push(vm.id),
  });
  const fenced = async (ids: string[]) => {
    const now = new Date().toISOString();
    await writeJsonFile(keeperStatePath(dataDir), {
      pid: 1,
      leaseOk: true,
      lastOkAt: now,
      since: now,
      fencedAt: now,
      fenced: ids,
    });
  };
  return { dataDir, store, state, runtime, fencing, started, fenced };
}

test('Fencing: after a self-fence, a VM nobody took restarts here; one that failed over is cleaned up', async () => {
  const { dataDir, state, fencing, started, fenced, runtime } = await fencingSetup();
  try {
    const [kept] = await state.vms.create(
      vmRecord({ desired: 'running', ha: { enabled: true, priority: 0, maxRestarts: 3 } }),
    );
    const [taken] = await state.vms.create(vmRecord({ desired: 'running', host: 'h2' }));
    runtime.vms.set(taken!.id, { status: { state: 'crashed', pid: null, lastError: 'fenced' }, qmp: undefined });
    await fencing.init();
    await fenced([kept!.id, taken!.id]);
    await fencing.guard();
    assert.deepEqual(started, [kept!.id], 'only the VM still owned here restarts');
    assert.ok(runtime.calls.includes(`cleanup ${taken!.id}`), 'what is left of the one that moved goes');
    assert.deepEqual(fencing.guardedIds(), [kept!.id], 'the HA VM owned here is guarded');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('Fencing: a restart after a fence is refused when the liveness key changed (another lease) meanwhile', async () => {
  const { dataDir, store, state, fencing, started, fenced } = await fencingSetup();
  try {
    const [vm] = await state.vms.create(vmRecord({ desired: 'running' }));
    await fencing.init();
    await fenced([vm!.id]);
    // The key is replaced between the guard's read and its transaction: the confirm must fail.
    const realAlive = state.hosts.freshAliveRev.bind(state.hosts);
    state.hosts.freshAliveRev = async (name: string) => {
      const rev = await realAlive(name);
      await store.put(keys.alive('h1'), { name: 'h1', renewed: true });
      return rev;
    };
    await fencing.guard();
    assert.deepEqual(started, [], 'no restart on a lease that is not the one read');
    state.hosts.freshAliveRev = realAlive;
    await fencing.guard();
    assert.deepEqual(started, [vm!.id], 'the next step, with the current lease, restarts it');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('Fencing: the restart gate reads the owner from the store and needs the lease for a guarded VM', async () => {
  const { dataDir, state, fencing } = await fencingSetup();
  try {
    const [plain] = await state.vms.create(vmRecord({ desired: 'running' }));
    const [guarded] = await state.vms.create(vmRecord({ desired: 'running' }));
    await writeGuarded(dataDir, [guarded!.id]);
    assert.equal(await fencing.mayRestart(plain!.id), true);
    assert.equal(await fencing.mayRestart(guarded!.id), false, 'no keeper state: no lease');
    await writeJsonFile(keeperStatePath(dataDir), {
      pid: 1,
      leaseOk: true,
      lastOkAt: new Date().toISOString(),
      since: '',
      fencedAt: null,
      fenced: [],
    });
    assert.equal(await fencing.mayRestart(guarded!.id), true);
    await state.vms.update(plain!.id, (v) => ({ ...v, host: 'h2' }));
    assert.equal(await fencing.mayRestart(plain!.id), false, 'owned elsewhere now');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
