import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IoOrder } from './io-order.js';

test('a write waits for an earlier overlapping write; disjoint ranges and reads of reads do not wait', () => {
  const o = new IoOrder();
  const w1 = o.enter('write', 0, 100);
  const w2 = o.enter('write', 50, 150);
  const w3 = o.enter('write', 200, 300);
  const r1 = o.enter('read', 0, 10);
  const r2 = o.enter('read', 200, 210);
  assert.equal(w1.ready, null);
  assert.notEqual(w2.ready, null, 'overlapping write waits');
  assert.equal(w3.ready, null, 'disjoint write runs at once');
  assert.notEqual(r1.ready, null, 'read after an overlapping write waits');
  assert.notEqual(r2.ready, null);
  const w4 = o.enter('write', 0, 10);
  assert.equal(w4.blockers, 2, 'a write waits for the earlier overlapping write (w1) and read (r1)');
});

test('a flush waits for every earlier write and nothing later', async () => {
  const o = new IoOrder();
  const w1 = o.enter('write', 0, 100);
  const r = o.enter('read', 500, 600);
  const f = o.enter('flush', 0, 0);
  const w2 = o.enter('write', 0, 100);
  assert.equal(f.blockers, 1);
  assert.equal(w2.blockers, 1, 'a later write waits only for the overlapping write, not the flush');
  const order: string[] = [];
  void f.ready!.then(() => order.push('flush'));
  o.leave(r);
  await Promise.resolve();
  assert.deepEqual(order, []);
  o.leave(w1);
  await f.ready;
  assert.deepEqual(order, ['flush']);
  o.leave(f);
  await w2.ready;
  const idle = o.idle();
  o.leave(w2);
  await idle;
  assert.equal(o.inFlight, 0);
});
