import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isFdError } from '../core/errors.js';
import { formatManifest, parseManifest } from './manifest.js';

const SHA1 = 'a'.repeat(40);
const SHA256 = 'B'.repeat(64);
const SHA512 = 'c'.repeat(128);

test('every spacing real tools write parses to the same entries', () => {
  const text = [
    `SHA1(disk one.vmdk)= ${SHA1}`,
    `SHA256 (x.ovf) = ${SHA256}`,
    `SHA512(y.iso)=${SHA512}`,
    `  sha256( z.txt )  =  ${SHA256}  \r`,
    '',
  ].join('\n');
  assert.deepEqual(parseManifest(text), [
    { algorithm: 'sha1', file: 'disk one.vmdk', digest: SHA1 },
    { algorithm: 'sha256', file: 'x.ovf', digest: SHA256.toLowerCase() },
    { algorithm: 'sha512', file: 'y.iso', digest: SHA512 },
    { algorithm: 'sha256', file: 'z.txt', digest: SHA256.toLowerCase() },
  ]);
});

test('a malformed line or a digest of the wrong length is FD_OVF_BAD_MANIFEST naming the line', () => {
  assert.throws(
    () => parseManifest(`SHA1(a)= ${SHA1}\nMD5(b)= 00`, 'x.mf'),
    (e) => isFdError(e, 'FD_OVF_BAD_MANIFEST') && /x\.mf line 2/.test(e.message),
  );
  assert.throws(
    () => parseManifest(`SHA256(a)= ${SHA1}`),
    (e) => isFdError(e, 'FD_OVF_BAD_MANIFEST'),
  );
});

test('formatting writes ovftool style and parses back', () => {
  const entries = [{ algorithm: 'sha256' as const, file: 'a.ovf', digest: SHA256.toLowerCase() }];
  assert.equal(formatManifest(entries), `SHA256(a.ovf)= ${SHA256.toLowerCase()}\n`);
  assert.deepEqual(parseManifest(formatManifest(entries)), entries);
});
