import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFdError } from '../core/errors.js';
import { byteMultiplier, toBytes } from './units.js';

test('every allocation-unit spelling real descriptors use', () => {
  assert.equal(byteMultiplier('byte * 2^30', 't'), 2 ** 30);
  assert.equal(byteMultiplier('byte*2^30', 't'), 2 ** 30);
  assert.equal(byteMultiplier('byte * 2^20', 't'), 2 ** 20);
  assert.equal(byteMultiplier('byte * 1024', 't'), 1024);
  assert.equal(byteMultiplier('byte * 2^10 * 1024', 't'), 2 ** 20);
  assert.equal(byteMultiplier('byte * 10^6', 't'), 1e6);
  assert.equal(byteMultiplier('MegaBytes', 't'), 2 ** 20);
  assert.equal(byteMultiplier('GigaBytes', 't'), 2 ** 30);
  assert.equal(byteMultiplier('KiloBytes', 't'), 1024);
  assert.equal(byteMultiplier('MB', 't'), 2 ** 20);
  assert.equal(byteMultiplier('byte', 't'), 1);
  assert.equal(byteMultiplier(undefined, 't'), 1);
  assert.equal(byteMultiplier('', 't'), 1);
});

test('quantities become bytes; junk is a coded error', () => {
  assert.equal(toBytes('30', 'byte * 2^20', 't'), 30 * 2 ** 20);
  assert.equal(toBytes(' 4 ', 'byte * 2^30', 't'), 4 * 2 ** 30);
  assert.throws(
    () => toBytes('1.5', 'byte', 't'),
    (e) => isFdError(e, 'FD_OVF_BAD_NUMBER'),
  );
  assert.throws(
    () => toBytes('4', 'hertz * 10^6', 't'),
    (e) => isFdError(e, 'FD_OVF_BAD_UNITS'),
  );
  assert.throws(
    () => toBytes('99999999', 'byte * 2^60', 't'),
    (e) => isFdError(e, 'FD_OVF_BAD_UNITS') || isFdError(e, 'FD_OVF_BAD_NUMBER'),
  );
});
