import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFdError } from '../../core/errors.js';
import { KeyedLock } from '../../core/keyed-lock.js';
import { silentLogger } from '../../core/log.js';
import { FakeRuntime } from '../runtime/fake.js';
import { diskRecord, loseHost, memoryState, seedHosts, vmRecord } from '../state/testing.js';
import type { LocalMirror, StandbyCopies } from './standby.js';
import { takeover, takeoverVerdict } from './takeover.js';

test("takeoverVerdict: take over only the lost primary's VM, from a copy whose mirror ran all along", () => {
  const vm = vmRecord({ host: 'h1', name: 'web' });
  assert.deepEqual(takeoverVerdict(vm, 'h1', 'h2', { vdiskAlive: true }), { do: 'take' });
  assert.deepEqual(takeoverVerdict({ ...vm, host: 'h2' }, 'h1', 'h2', { vdiskAlive: true }), { do: 'done' });
  assert.equal(
    (takeoverVerdict({ ...vm, host: 'h3' }, 'h1', 'h2', { vdiskAlive: true }) as { code: string }).code,
    'FD_TAKEOVER_STALE',
  );
  assert.equal((takeoverVerdict(vm, 'h1', 'h2', undefined) as { code: string }).code, 'FD_NO_STANDBY_COPY');
  assert.equal(
    (takeoverVerdict(vm, 'h1', 'h2', { vdiskAlive: false }) as { code: string }).code,
    'FD_STANDBY_COPY_STALE',
  );
});

/** A standby copy that is "there" without any vdisk process. */
function fakeCopies(alive: boolean) {
  const fenced: string[] = [];
  const local = {
    vmId: '',
    primary: 'h1',
    host: '127.0.0.1',
    disks: [],
    vdisk: { pid: 1, start: 0 },
  } as unknown as LocalMirror;
  const copies = {
    fenced,
    local: async () => local,
    live: async () => (alive ? local : undefined),
    fence: async (l: LocalMirror) => void fenced.push(l.primary),
    adopt: async () => ({}),
  } as unknown as StandbyCopies & { fenced: string[] };
  return copies;
}

async function setup() {
  const { store, state } = await memoryState();
  await seedHosts(store, [
    { name: 'h1', alive: true },
    { name: 'h2', alive: true },
  ]);
  const runtime = new FakeRuntime();
  const adopted: string[] = [];
  const deps = {
    hostName: 'h2',
    state,
    runtime,
    locks: new KeyedLock(),
    log: silentLogger,
    adopted: async (id: string) => void adopted.push(id),
  };
  return { store, state, runtime, deps, adopted };
}

test('takeover: the copy is fenced, ownership and disks move in one transaction, the VM starts', async () => {
  const { store, state, deps, adopted } = await setup();
  const vm = vmRecord({ desired: 'running', host: 'h1' });
  const disk = diskRecord(vm.id, { host: 'h1' });
  await state.vms.create({ ...vm, disks: [{ id: 'disk0', diskId: disk.id }] }, [disk]);
  await state.protection.put({
    vmId: vm.id,
    requestedStandby: null,
    primary: 'h1',
    standby: 'h2',
    state: 'protected',
    progress: null,
    lastError: null,
    since: '',
    updatedAt: '',
  });
  await loseHost(store, 'h1');
  const copies = fakeCopies(true);
  const out = await takeover(deps, copies, { id: vm.id, from: 'h1' });
  assert.equal(out.host, 'h2');
  assert.deepEqual(copies.fenced, ['h1'], 'the storage fence came first');
  assert.equal(state.vms.cached(vm.id)?.value.host, 'h2');
  assert.equal(state.catalog.findDisk(disk.id)?.host, 'h2', 'the disk moved with the VM');
  assert.equal(state.protection.get(vm.id)?.state, 'degraded');
  assert.deepEqual(adopted, [vm.id]);
});

test('takeover: refused, changing nothing, when the lost host came back (its liveness key is there)', async () => {
  const { state, deps, adopted } = await setup();
  const [vm] = await state.vms.create(vmRecord({ desired: 'running', host: 'h1' }));
  // h1 never lost its key here: the transaction that requires it absent must fail.
  await assert.rejects(takeover(deps, fakeCopies(true), { id: vm!.id, from: 'h1' }), (e) =>
    isFdError(e, 'FD_TAKEOVER_STALE'),
  );
  assert.equal(state.vms.cached(vm!.id)?.value.host, 'h1');
  assert.deepEqual(adopted, []);
});

test('takeover: refused when the mirror stopped before the primary was lost (the copy may miss writes)', async () => {
  const { store, state, deps } = await setup();
  const [vm] = await state.vms.create(vmRecord({ desired: 'running', host: 'h1' }));
  await loseHost(store, 'h1');
  const copies = fakeCopies(false);
  await assert.rejects(takeover(deps, copies, { id: vm!.id, from: 'h1' }), (e) =>
    isFdError(e, 'FD_STANDBY_COPY_STALE'),
  );
  assert.deepEqual(copies.fenced, []);
  assert.equal(state.vms.cached(vm!.id)?.value.host, 'h1');
});
