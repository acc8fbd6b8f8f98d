import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSize, parseDurationMs, formatSize } from './units.js';
import { isFdError } from './errors.js';

test('sizes parse binary units the way qemu-img does', () => {
  assert.equal(parseSize('256M'), 256 * 1024 * 1024);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize('2GiB'), 2 * 1024 ** 3);
  assert.equal(parseSize('1.5k'), 1536);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(formatSize(3 * 1024 * 1024), '3.00 MiB');
});

test('a bad size is an FD_BAD_SIZE error, not NaN', () => {
  for (const bad of ['', 'abc', '-1G', '12Q', '1e9']) {
    assert.throws(
      () => parseSize(bad),
      (e) => isFdError(e, 'FD_BAD_SIZE'),
      bad,
    );
  }
});

test('durations parse with units and default to seconds', () => {
  assert.equal(parseDurationMs('500ms'), 500);
  assert.equal(parseDurationMs('30'), 30_000);
  assert.equal(parseDurationMs('2m'), 120_000);
  assert.throws(
    () => parseDurationMs('soon'),
    (e) => isFdError(e, 'FD_BAD_DURATION'),
  );
});
