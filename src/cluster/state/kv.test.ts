/**
 * One set of checks for both KvStores: the real etcd one and the in-memory twin the unit tests
 * of the cluster's logic run on. Whatever the twin gets wrong here, those tests would believe.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../core/log.js';
import { ensureEmbeddedEtcd, stopEmbeddedEtcd } from '../clustering/etcd-process.js';
import type { KvStore, StoreEvent } from './kv.js';
import { MemoryStore } from './memory-store.js';
import { Store } from './store.js';

let dir = '';
let url = '';
const etcdStores: Store[] = [];
let n = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fd-kv-'));
  url = (await ensureEmbeddedEtcd(dir, silentLogger)).clientUrl;
});
after(async () => {
  for (const s of etcdStores) s.close();
  await stopEmbeddedEtcd(dir);
  await rm(dir, { recursive: true, force: true });
});

const kinds: [string, () => KvStore][] = [
  ['memory', () => new MemoryStore()],
  [
    'etcd',
    () => {
      const s = new Store([url], `/kvtest${n++}/`);
      etcdStores.push(s);
      return s;
    },
  ],
];

const until = async (pred: () => boolean): Promise<void> => {
  for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(pred(), 'condition not reached');
};

for (const [kind, make] of kinds) {
  test(`${kind}: compare-and-swap, create-only and transactions hold or change nothing`, async () => {
    const s = make();
    assert.ok(await s.create('a', { n: 1 }));
    assert.equal(await s.create('a', { n: 2 }), undefined);
    const a = (await s.get<{ n: number }>('a'))!;
    assert.equal(a.value.n, 1);
    assert.ok(await s.update('a', { n: 3 }, a.rev));
    assert.equal(await s.update('a', { n: 4 }, a.rev), undefined, 'a stale revision must lose');
    const a2 = (await s.get<{ n: number }>('a'))!;
    assert.equal(a2.value.n, 3);
    assert.ok(Number(a2.rev) > Number(a.rev));
    // One failed expectation: no put and no delete happens.
    assert.equal(
      await s.txn({
        expect: [
          { key: 'a', rev: a2.rev },
          { key: 'b', rev: a2.rev },
        ],
        put: [{ key: 'c', value: 1 }],
        del: ['a'],
      }),
      undefined,
    );
    assert.equal(await s.get('c'), undefined);
    assert.ok(await s.get('a'));
    assert.equal(
      await s.txn({
        expect: [
          { key: 'a', rev: a2.rev },
          { key: 'b', rev: '0' },
        ],
        put: [{ key: 'b', value: 2 }],
        del: ['a'],
      }),
      (await s.get<number>('b'))?.rev,
    );
    assert.equal(await s.get('a'), undefined);
    assert.equal((await s.get<number>('b'))!.value, 2);
    assert.equal(await s.remove('b', '1'), undefined);
    assert.ok(await s.remove('b'));
    assert.equal(await s.count(''), 0);
  });

  test(`${kind}: mutate applies 20 concurrent increments without losing one and returns the new revision`, async () => {
    const s = make();
    await s.create('c', { n: 0 });
    const res = await Promise.all(
      Array.from({ length: 20 }, () => s.mutate<{ n: number }>('c', (c) => ({ n: c.n + 1 }))),
    );
    const final = (await s.get<{ n: number }>('c'))!;
    assert.equal(final.value.n, 20);
    assert.ok(res.some((r) => r.rev === final.rev && r.value.n === 20));
  });

  test(`${kind}: lists come in key order past a page, and a snapshot plus its watch miss nothing`, async () => {
    const s = make();
    const keys = Array.from({ length: 1203 }, (_, i) => `vms/${String(i).padStart(5, '0')}`);
    for (let i = 0; i < keys.length; i += 100)
      await s.txn({
        expect: [{ key: `none-${i}`, rev: '0' }],
        put: keys.slice(i, i + 100).map((key) => ({ key, value: { i } })),
      });
    await s.put('other/x', 1);
    const list = await s.list('vms/');
    assert.deepEqual(
      list.map((v) => v.key),
      keys,
    );
    const snap = await s.snapshot('vms/');
    assert.equal(snap.kvs.length, keys.length);
    await s.put('vms/late', { late: true });
    const seen: StoreEvent<unknown>[] = [];
    const stop = await s.watch('vms/', (e) => seen.push(e), { fromRev: String(Number(snap.rev) + 1) });
    await s.remove('vms/00000');
    await until(() => seen.length >= 2);
    assert.deepEqual(
      seen.map((e) => [e.type, e.key]),
      [
        ['put', 'vms/late'],
        ['delete', 'vms/00000'],
      ],
    );
    assert.ok(Number(seen[1]!.rev) > Number(seen[0]!.rev));
    await stop();
  });
}
