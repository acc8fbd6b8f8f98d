/** A self-signed certificate for a daemon that listens beyond localhost, made once with openssl. */
import { mkdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { run } from '../core/process.js';

export async function ensureSelfSignedCert(
  dataDir: string,
  host: string,
): Promise<{ key: string; cert: string; certPath: string }> {
  const dir = join(dataDir, 'tls');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  if (!existsSync(keyPath) || !existsSync(certPath)) {
    const san = [
      `DNS:${hostname()}`,
      'DNS:localhost',
      'IP:127.0.0.1',
      /^\d+\.\d+\.\d+\.\d+$/.test(host) ? `IP:${host}` : `DNS:${host}`,
    ];
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '3650',
      '-subj',
      `/CN=${hostname()}`,
      '-addext',
      `subjectAltName=${[...new Set(san)].join(',')}`,
    ]);
  }
  return { key: await readFile(keyPath, 'utf8'), cert: await readFile(certPath, 'utf8'), certPath };
}
