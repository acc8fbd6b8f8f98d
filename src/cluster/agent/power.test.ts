import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import { KeyedLock } from '../../core/keyed-lock.js';
import { silentLogger } from '../../core/log.js';
import type { Peers } from '../peer/client.js';
import { Protection } from '../protection/protection.js';
import { Provisioner } from '../provisioning/provisioner.js';
import { FakeRuntime } from '../runtime/fake.js';
import type { TaskHandle } from '../state/tasks.js';
import { memoryState, seedHosts, vmRecord } from '../state/testing.js';
import { Power } from './power.js';
import { StatusPublisher } from './status.js';

const task: TaskHandle = {
  id: 't',
  signal: new AbortController().signal,
  log: () => undefined,
  progress: () => undefined,
};

async function setup() {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-power-'));
  const { store, state } = await memoryState();
  await seedHosts(store, [{ name: 'h1', alive: true }]);
  const runtime = new FakeRuntime();
  const locks = new KeyedLock();
  const status = new StatusPublisher({ hostName: 'h1', state });
  const provisioner = new Provisioner({ state, dataDir, hostName: 'h1', log: silentLogger, defaultNetwork: 'user' });
  const peers: Peers = { call: () => Promise.reject(new Error('no peers in this test')) };
  const protection = new Protection({
    hostName: 'h1',
    listenAddress: () => '127.0.0.1',
    dataDir,
    state,
    runtime,
    disks: provisioner.disks,
    peers,
    locks,
    log: silentLogger,
    adopted: async () => undefined,
    movedAway: () => undefined,
  });
  const power = new Power({
    hostName: 'h1',
    state,
    runtime,
    provisioner,
    protection,
    status,
    locks,
    log: silentLogger,
  });
  return { dataDir, store, state, runtime, power };
}

test('a VM start makes at most 5 etcd round trips before QEMU is spawned', async () => {
  const { dataDir, store, state, runtime, power } = await setup();
  try {
    const [vm] = await state.vms.create(vmRecord({ desired: 'stopped' }));
    let atSpawn = -1;
    runtime.onSpawn = () => (atSpawn = store.roundTrips);
    const before = store.roundTrips;
    await power.start(vm!.id, task);
    const used = atSpawn - before;
    assert.ok(atSpawn >= 0, 'QEMU was spawned');
    assert.ok(used <= 5, `a start took ${used} round trips before the spawn (${[...store.calls].join(', ')})`);
    assert.equal(state.vms.cached(vm!.id)?.value.desired, 'running');
    assert.equal(state.vms.status(vm!.id)?.state, 'running');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('a start the host has no room for is refused and changes nothing', async () => {
  const { dataDir, state, runtime, power } = await setup();
  try {
    const [vm] = await state.vms.create(vmRecord({ desired: 'stopped', memoryBytes: 64 * 1024 ** 3 }));
    await assert.rejects(power.start(vm!.id, task), (e) => isFdError(e, 'FD_NO_HOST_WITH_ROOM'));
    assert.equal(state.vms.cached(vm!.id)?.value.desired, 'stopped', 'desired state unchanged');
    assert.deepEqual(runtime.calls, [], 'nothing was spawned');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('parallel starts and stops of one VM apply one after another and end consistent', async () => {
  const { dataDir, state, runtime, power } = await setup();
  try {
    const [vm] = await state.vms.create(vmRecord({ desired: 'stopped' }));
    const ops = [
      power.start(vm!.id, task),
      power.stop(vm!.id, { graceful: false, timeoutMs: 0 }, task),
      power.start(vm!.id, task),
    ];
    const results = await Promise.all(ops);
    assert.deepEqual(
      results.map((r) => r.state),
      ['running', 'stopped', 'running'],
    );
    assert.equal((await runtime.status(vm!.id)).state, 'running');
    assert.equal(state.vms.cached(vm!.id)?.value.desired, 'running');
    assert.equal(state.vms.status(vm!.id)?.state, 'running', 'the published status agrees with what runs');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
