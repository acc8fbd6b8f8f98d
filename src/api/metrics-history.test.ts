import { test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../core/log.js';
import { HISTORY_SAMPLES, MetricsHistory } from './metrics-history.js';
import type { VmStats } from '../cluster/runtime/runtime.js';

test('rates from counters, an hour kept, nothing before the first pair', async () => {
  let stats: VmStats[] = [];
  const h = new MetricsHistory(async () => stats, silentLogger, 10_000);
  const at = (i: number): VmStats => ({
    id: 'a',
    name: 'a',
    cpuSeconds: i * 5, // half a core over 10 s
    rssBytes: 100,
    diskReadBytes: i * 1000,
    diskWriteBytes: i * 2000,
    netRxBytes: i * 10,
    netTxBytes: i * 20,
  });
  for (let i = 0; i < HISTORY_SAMPLES + 5; i++) {
    stats = [at(i)];
    await h.sample(i * 10_000);
  }
  const s = h.vm('a').samples;
  assert.equal(s.length, HISTORY_SAMPLES);
  assert.equal(s.at(-1)!.cpuPercent, 50);
  assert.equal(s.at(-1)!.diskReadBps, 100);
  assert.equal(s.at(-1)!.diskWriteBps, 200);
  assert.equal(s.at(-1)!.netTxBps, 2);
  assert.equal(s[0]!.t, 5 * 10_000);

  const fresh = new MetricsHistory(async () => [at(3)], silentLogger);
  await fresh.sample(0);
  assert.equal(fresh.vm('a').samples[0]!.cpuPercent, null);
  assert.deepEqual(fresh.vm('nope').samples, []);
  assert.equal(fresh.hostSamples().samples.length, 1);
});

test('a counter that went back (VM restarted) gives no rate, not a negative one', async () => {
  let cpu = 100;
  const h = new MetricsHistory(async () => [{ id: 'b', name: 'b', cpuSeconds: cpu }], silentLogger);
  await h.sample(0);
  cpu = 1;
  await h.sample(10_000);
  assert.equal(h.vm('b').samples.at(-1)!.cpuPercent, null);
});
