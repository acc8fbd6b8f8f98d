import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedLock } from './keyed-lock.js';
import { sleep } from './process.js';

test('work on one key runs one piece at a time, in order, and a failure does not stop the queue', async () => {
  const lock = new KeyedLock();
  const seen: string[] = [];
  let inside = 0;
  const piece = (name: string, fail = false) =>
    lock.run('vm1', async () => {
      inside++;
      assert.equal(inside, 1, 'two pieces ran at once');
      seen.push(`${name}:in`);
      await sleep(5);
      seen.push(`${name}:out`);
      inside--;
      if (fail) throw new Error(name);
      return name;
    });
  const results = await Promise.allSettled([piece('a'), piece('b', true), piece('c')]);
  assert.deepEqual(seen, ['a:in', 'a:out', 'b:in', 'b:out', 'c:in', 'c:out']);
  assert.deepEqual(
    results.map((r) => r.status),
    ['fulfilled', 'rejected', 'fulfilled'],
  );
  assert.equal(lock.busy('vm1'), false);
});

test('different keys run side by side; runAll holds every key it names', async () => {
  const lock = new KeyedLock();
  const order: string[] = [];
  const slow = lock.run('a', async () => {
    await sleep(20);
    order.push('a');
  });
  const fast = lock.run('b', async () => {
    order.push('b');
  });
  await Promise.all([slow, fast]);
  assert.deepEqual(order, ['b', 'a']);

  // While runAll's work runs it holds both keys: work on either waits for it to end.
  const both = lock.runAll(['b', 'a', 'a'], async () => {
    order.push('both:in');
    await sleep(10);
    order.push('both:out');
  });
  const onA = lock.run('a', async () => {
    order.push('a2');
  });
  await sleep(1);
  const onB = lock.run('b', async () => {
    order.push('b2');
  });
  await Promise.all([both, onA, onB]);
  const rest = order.slice(2);
  assert.equal(rest.indexOf('both:out'), rest.indexOf('both:in') + 1, `work ran inside runAll: ${rest.join(' ')}`);
  assert.ok(rest.includes('a2') && rest.includes('b2'));
  await lock.settled();
});
