import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { isFdError } from '../../core/errors.js';
import { ProbeWatcher } from './probe-watch.js';

test('waitFor resolves on a matching event, including one that arrives later', async () => {
  const s = new PassThrough();
  const w = new ProbeWatcher(s);
  s.write('FD-COUNTER 1 #\r\nFD-COUNTER 2 #\r\n');
  const two = w.waitFor('counter', { where: (e) => e.n >= 2n });
  const three = w.waitFor('counter', { where: (e) => e.n >= 3n });
  s.write('FD-COUNTER 3');
  s.write(' #\r\n');
  assert.equal((await two).n, 2n);
  assert.equal((await three).n, 3n);
  assert.equal(w.last('counter')?.n, 3n);
  assert.equal(w.all('counter').length, 3);
});

test('waitFor fails with FD_GUEST_PROBE_TIMEOUT when the console closes or time runs out', async () => {
  const s = new PassThrough();
  const w = new ProbeWatcher(s);
  await assert.rejects(w.waitFor('ready', { timeoutMs: 50 }), (e) => isFdError(e, 'FD_GUEST_PROBE_TIMEOUT'));
  const pending = w.waitFor('ready');
  s.end('FD-HB 1 5 #\n');
  await assert.rejects(pending, (e) => isFdError(e, 'FD_GUEST_PROBE_TIMEOUT') && /closed/.test(e.message));
});
