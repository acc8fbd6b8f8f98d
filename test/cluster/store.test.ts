import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { TaskManager } from '../../src/cluster/state/tasks.js';
import { TokenService } from '../../src/cluster/state/tokens.js';
import { State } from '../../src/cluster/state/state.js';
import type { VmRecord } from '../../src/cluster/state/model.js';
import { FdError, isFdError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/log.js';
import { newUuid } from '../../src/core/ids.js';
import { sleep } from '../../src/core/process.js';

let etcd: TestEtcd;
before(async () => {
  etcd = await startTestEtcd();
});
after(async () => {
  await etcd?.dispose();
});

test('compare-and-swap: of two writers holding the same revision exactly one wins', async () => {
  const store = etcd.store('/t1/');
  await store.create('k', { n: 0 });
  const cur = (await store.get<{ n: number }>('k'))!;
  const results = await Promise.all([store.update('k', { n: 1 }, cur.rev), store.update('k', { n: 2 }, cur.rev)]);
  assert.deepEqual(results.filter(Boolean).length, 1);
  assert.equal(await store.create('k', { n: 9 }), undefined, 'create of an existing key must fail');
});

test('mutate applies 30 concurrent increments without losing one', async () => {
  const store = etcd.store('/t2/');
  await store.create('counter', { n: 0 });
  await Promise.all(Array.from({ length: 30 }, () => store.mutate<{ n: number }>('counter', (c) => ({ n: c.n + 1 }))));
  assert.equal((await store.get<{ n: number }>('counter'))!.value.n, 30);
});

function vmRecord(name: string): VmRecord {
  const now = new Date().toISOString();
  return {
    id: newUuid(),
    name,
    cpus: 1,
    memoryBytes: 128 * 1024 * 1024,
    machine: 'q35',
    firmware: 'bios',
    boot: ['disk'],
    kernelImage: null,
    disks: [],
    cdroms: [],
    nics: [],
    restartPolicy: 'never',
    ha: null,
    antiAffinity: null,
    desired: 'stopped',
    host: 'h1',
    image: null,
    createdAt: now,
    updatedAt: now,
  };
}

test('two creates of one VM name race: one succeeds, the other is FD_VM_EXISTS', async () => {
  const state = await State.open(etcd.store('/t3/'), silentLogger);
  const vms = state.vms;
  const res = await Promise.allSettled([vms.create(vmRecord('web')), vms.create(vmRecord('web'))]);
  assert.equal(res.filter((r) => r.status === 'fulfilled').length, 1);
  const rejected = res.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.ok(isFdError(rejected.reason, 'FD_VM_EXISTS'));
  assert.equal((await vms.list()).length, 1);
  assert.equal((await vms.get('web')).name, 'web');
  await assert.rejects(vms.get('nope'), (e) => isFdError(e, 'FD_VM_NOT_FOUND'));
  await state.close();
});

test('tasks: success keeps the result, failure keeps the code, cancel ends as cancelled', async () => {
  const store = etcd.store('/t4/');
  const tasks = new TaskManager(store, 'h1', silentLogger);
  await tasks.init();
  const ok = await tasks.run('x.ok', 'ok', null, async (t) => {
    t.log('working');
    t.progress({ done: 5, total: 10, unit: 'items', ratePerS: 1, etaS: 5 });
    return { answer: 42 };
  });
  const okDone = await tasks.wait(ok.id, 10_000);
  assert.equal(okDone.state, 'succeeded');
  assert.deepEqual(okDone.result, { answer: 42 });
  assert.equal(okDone.log[0]?.msg, 'working');

  const bad = await tasks.run('x.bad', 'bad', null, async () => {
    throw new FdError('FD_SOMETHING_BROKE', 'it broke', { hint: 'fix it' });
  });
  const badDone = await tasks.wait(bad.id, 10_000);
  assert.equal(badDone.state, 'failed');
  assert.equal(badDone.error?.code, 'FD_SOMETHING_BROKE');

  const slow = await tasks.run('x.slow', 'slow', null, async (t) => {
    while (!t.signal.aborted) await sleep(20);
    throw t.signal.reason;
  });
  await tasks.cancel(slow.id);
  assert.equal((await tasks.wait(slow.id, 10_000)).state, 'cancelled');
  await assert.rejects(tasks.cancel(okDone.id), (e) => isFdError(e, 'FD_TASK_FINISHED'));
  await tasks.drain();
});

test('a task left running by a dead daemon is marked failed on the next start, never left running', async () => {
  const store = etcd.store('/t5/');
  const first = new TaskManager(store, 'h1', silentLogger);
  await first.init();
  // The work never finishes: this is the daemon that "dies" (we simply abandon it).
  const orphan = await first.run('x.hang', 'hang', null, () => new Promise(() => undefined));
  const second = new TaskManager(store, 'h1', silentLogger);
  await second.init();
  const t = await second.get(orphan.id);
  assert.equal(t.state, 'failed');
  assert.equal(t.error?.code, 'FD_TASK_INTERRUPTED');
  await first.close();
  await second.close();
});

test('tokens: a created token verifies, a mistyped or revoked one does not', async () => {
  const tokens = new TokenService(etcd.store('/t6/'));
  await tokens.init();
  const { token, info } = await tokens.create('ci', 'viewer');
  assert.equal((await tokens.verify(token))?.name, 'ci');
  assert.equal(await tokens.verify(token.slice(0, -1) + (token.endsWith('a') ? 'b' : 'a')), undefined);
  assert.equal(await tokens.verify('garbage'), undefined);
  assert.ok(!JSON.stringify(await tokens.list()).includes(token.split('_')[2]!), 'list must not show secrets');
  await tokens.revoke(info.id);
  assert.equal(await tokens.verify(token), undefined);
  await tokens.close();
});
