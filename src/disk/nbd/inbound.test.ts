import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Inbound } from './inbound.js';

test('headers and payloads split across chunks come out whole and in order', () => {
  const q = new Inbound();
  const all = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
  q.push(all.subarray(0, 3));
  q.push(all.subarray(3, 40));
  q.push(all.subarray(40));
  const [b, o] = q.peek(10);
  assert.deepEqual(b.subarray(o, o + 10), all.subarray(0, 10));
  q.skip(2);
  assert.deepEqual(q.take(50), all.subarray(2, 52));
  assert.equal(q.length, 48);
  const view = q.take(10);
  assert.deepEqual(view, all.subarray(52, 62));
  assert.equal(view.buffer, all.buffer, 'a payload inside one chunk is a view, not a copy');
  assert.deepEqual(q.take(38), all.subarray(62));
  assert.equal(q.length, 0);
});
