import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../core/errors.js';
import { run } from '../core/process.js';
import { withTempDir } from '../../test/ovf/helpers.js';
import { verifyManifestSignature } from './cert.js';

/** Signs a manifest the way ovftool does: openssl dgst -sha256 -sign, hex, then the cert. */
async function signed(dir: string, manifest: string): Promise<string> {
  const key = join(dir, 'key.pem');
  const crt = join(dir, 'cert.pem');
  const mf = join(dir, 'a.mf');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    key,
    '-out',
    crt,
    '-days',
    '2',
    '-subj',
    '/CN=flightdeck test signer',
  ]);
  await import('node:fs/promises').then((fs) => fs.writeFile(mf, manifest));
  const sig = await run('openssl', ['dgst', '-sha256', '-sign', key, '-hex', mf]);
  const hex = sig.stdout.trim().split('= ').pop()!;
  return `SHA256(a.mf)= ${hex}\n${await readFile(crt, 'utf8')}`;
}

test('a signature made with openssl over the manifest verifies with the embedded certificate', async () => {
  await withTempDir(async (dir) => {
    const manifest = `SHA256(a.ovf)= ${'1'.repeat(64)}\n`;
    const cert = await signed(dir, manifest);
    const res = verifyManifestSignature(cert, 'a.mf', Buffer.from(manifest));
    assert.match(res.subject, /CN=flightdeck test signer/);
    assert.equal(res.selfSigned, true);
    assert.equal(res.algorithm, 'sha256');
  });
});

test('a changed manifest fails signature verification with FD_OVF_SIGNATURE_INVALID', async () => {
  await withTempDir(async (dir) => {
    const manifest = `SHA256(a.ovf)= ${'1'.repeat(64)}\n`;
    const cert = await signed(dir, manifest);
    const tampered = Buffer.from(manifest.replace('1111', '2222'));
    assert.throws(
      () => verifyManifestSignature(cert, 'a.mf', tampered),
      (e) => isFdError(e, 'FD_OVF_SIGNATURE_INVALID'),
    );
    assert.throws(
      () => verifyManifestSignature('no signature here', 'a.mf', tampered),
      (e) => isFdError(e, 'FD_OVF_BAD_CERT'),
    );
  });
});
