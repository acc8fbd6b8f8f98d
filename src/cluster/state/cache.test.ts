import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../core/log.js';
import { StateCache } from './cache.js';
import type { KvStore, Snapshot, StoreEvent } from './kv.js';
import { MemoryStore } from './memory-store.js';

test('the cache shows every change in revision order, and a writer reads its own write', async () => {
  const store = new MemoryStore();
  await store.put('vms/a', { n: 1 });
  const cache = new StateCache(store, silentLogger);
  await cache.start();
  assert.deepEqual(cache.get('vms/a')?.value, { n: 1 });
  const seen: string[] = [];
  cache.subscribe('vms/', (e) => seen.push(`${e.type} ${e.key}`));
  const rev = await store.txn({
    expect: [{ key: 'vms/b', rev: '0' }],
    put: [
      { key: 'vms/b', value: { n: 2 } },
      { key: 'disks/b', value: { vm: 'b' } },
    ],
  });
  await cache.caughtUp(rev!);
  assert.deepEqual(cache.get('vms/b')?.value, { n: 2 }, 'both keys of one transaction are there');
  assert.deepEqual(cache.get('disks/b')?.value, { vm: 'b' });
  assert.equal(cache.get('vms/b')?.rev, rev);
  await cache.caughtUp((await store.remove('vms/a'))!);
  assert.equal(cache.get('vms/a'), undefined);
  assert.deepEqual(
    cache.list('vms/').map((v) => v.key),
    ['vms/b'],
  );
  assert.deepEqual(seen, ['put vms/b', 'delete vms/a']);
  await cache.close();
});

test('lists come in key order and only under their prefix', async () => {
  const store = new MemoryStore();
  for (const k of ['vms/c', 'vms/a', 'vm-names/x', 'vms/b', 'status/vms/a']) await store.put(k, k);
  const cache = new StateCache(store, silentLogger);
  await cache.start();
  assert.deepEqual(
    cache.list('vms/').map((v) => v.key),
    ['vms/a', 'vms/b', 'vms/c'],
  );
  await cache.caughtUp(await store.put('vms/aa', 1));
  assert.deepEqual(
    cache.list('vms/').map((v) => v.key),
    ['vms/a', 'vms/aa', 'vms/b', 'vms/c'],
  );
  assert.equal(cache.count('status/vms/'), 1);
  await cache.close();
});

test('a watch that is lost (its revision compacted) is followed by a new snapshot; listeners hear what changed', async () => {
  const store = new MemoryStore();
  await store.put('vms/a', 1);
  let lose: ((err: Error) => void) | undefined;
  // The store as etcd behaves after a compaction: the watch is cancelled and changes meanwhile
  // are only in the next snapshot.
  const flaky: KvStore = Object.assign(Object.create(store) as KvStore, {
    watch: (
      prefix: string,
      on: (e: StoreEvent<unknown>) => void,
      opts?: { fromRev?: string; onLost?: (err: Error) => void },
    ) => {
      lose = opts?.onLost;
      return store.watch(prefix, on, opts);
    },
    snapshot: (prefix: string): Promise<Snapshot> => store.snapshot(prefix),
  });
  const cache = new StateCache(flaky, silentLogger);
  await cache.start();
  const seen: string[] = [];
  cache.subscribe('vms/', (e) => seen.push(`${e.type} ${e.key}`));
  const stopLive = lose!;
  // Changes the cancelled watch never delivers.
  (store as unknown as { listeners: Set<unknown> }).listeners.clear();
  await store.put('vms/b', 2);
  await store.remove('vms/a');
  stopLive(new Error('mvcc: required revision has been compacted'));
  for (let i = 0; i < 100 && cache.get('vms/b') === undefined; i++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(cache.get('vms/b')?.value, 2);
  assert.equal(cache.get('vms/a'), undefined);
  assert.deepEqual(seen.sort(), ['delete vms/a', 'put vms/b']);
  await cache.close();
});
