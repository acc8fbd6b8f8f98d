/**
 * A throwaway certificate authority for the TLS tests, made with openssl: the cluster CA, a
 * server certificate for localhost / 127.0.0.1, a client certificate, and a client certificate
 * from another CA. Each client lays out its files the way QEMU's tls-creds-x509 and libnbd's
 * tls-certificates want them (ca-cert.pem, client-cert.pem, client-key.pem in one dir).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';

export interface TestCa {
  /** PEM of the server side: what vdisk's tls option takes. */
  server: { certFile: string; keyFile: string; caFile: string };
  /** Dirs for QEMU / libnbd clients. */
  clientDir: string;
  /** A client of another CA. */
  rogueDir: string;
  /** The CA certificate only: a client without a certificate of its own. */
  anonDir: string;
}

async function ssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

async function newCa(dir: string, name: string): Promise<void> {
  await ssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}-cert.pem`,
    ],
    dir,
  );
}

async function issue(dir: string, ca: string, name: string, cn: string, usage: string, san?: string): Promise<void> {
  await ssl(
    [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-subj',
      `/CN=${cn}`,
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}.csr`,
    ],
    dir,
  );
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, `extendedKeyUsage=${usage}\n${san ? `subjectAltName=${san}\n` : ''}`);
  await ssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${ca}-cert.pem`,
      '-CAkey',
      `${ca}-key.pem`,
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      `${name}-cert.pem`,
    ],
    dir,
  );
}

async function clientDir(dir: string, sub: string, caCert: string, client?: string): Promise<string> {
  const d = join(dir, sub);
  await mkdir(d);
  await writeFile(join(d, 'ca-cert.pem'), await readFile(join(dir, caCert)));
  if (client) {
    await writeFile(join(d, 'client-cert.pem'), await readFile(join(dir, `${client}-cert.pem`)));
    await writeFile(join(d, 'client-key.pem'), await readFile(join(dir, `${client}-key.pem`)), { mode: 0o600 });
  }
  return d;
}

export async function makeTestCa(dir: string): Promise<TestCa> {
  await newCa(dir, 'ca');
  await newCa(dir, 'rogue-ca');
  await issue(dir, 'ca', 'server', 'localhost', 'serverAuth', 'DNS:localhost,IP:127.0.0.1');
  await issue(dir, 'ca', 'client', 'host-2', 'clientAuth');
  await issue(dir, 'rogue-ca', 'rogue', 'host-2', 'clientAuth');
  return {
    server: {
      certFile: join(dir, 'server-cert.pem'),
      keyFile: join(dir, 'server-key.pem'),
      caFile: join(dir, 'ca-cert.pem'),
    },
    clientDir: await clientDir(dir, 'client', 'ca-cert.pem', 'client'),
    // The rogue client trusts our server (it has our CA) but presents a certificate of its own CA.
    rogueDir: await clientDir(dir, 'rogue', 'ca-cert.pem', 'rogue'),
    anonDir: await clientDir(dir, 'anon', 'ca-cert.pem'),
  };
}
