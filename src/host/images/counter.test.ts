import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COUNTER_OFFSET_BYTES, counterRecord, parseCounterRecord, readCounterFromRaw } from './counter.js';

test('a counter record round-trips and a torn one reads as no record', () => {
  assert.equal(parseCounterRecord(counterRecord(123456789n)), 123456789n);
  const torn = counterRecord(5n);
  torn.writeBigUInt64LE(6n, 8); // n written, ~n still the old value
  assert.equal(parseCounterRecord(torn), null);
  assert.equal(parseCounterRecord(Buffer.alloc(4096)), null);
});

test('the counter is read from its fixed offset in a raw disk', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-counter-test-'));
  try {
    const disk = Buffer.alloc(COUNTER_OFFSET_BYTES + 4096);
    counterRecord(99n).copy(disk, COUNTER_OFFSET_BYTES);
    await writeFile(join(dir, 'd.raw'), disk);
    assert.equal(await readCounterFromRaw(join(dir, 'd.raw')), 99n);
    // A disk shorter than the offset (never written there) has no counter.
    await writeFile(join(dir, 'short.raw'), Buffer.alloc(4096));
    assert.equal(await readCounterFromRaw(join(dir, 'short.raw')), null);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
