/**
 * vdisk: serves one BlockDevice over NBD on a unix socket, the disk data path for a running VM
 * (QEMU attaches it with driver=nbd) and for host mounts. Many connections may share the
 * export; their requests are ordered against each other by one IoOrder.
 *
 * Fencing (for HA): `fence()` drops every client, refuses new ones and resolves once no device
 * call from this server is in flight, so the caller knows no further write from this host can
 * land on the disk. `close()` is the clean shutdown: stop accepting, let in-flight requests
 * reply, flush, remove the socket. Neither closes the device; its owner does.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import { chmod, unlink } from 'node:fs/promises';
import type { BlockDevice } from '../block-device.js';
import { FdError, isErrno } from '../../core/errors.js';
import { silentLogger, type Logger } from '../../core/log.js';
import { NbdConnection, type ConnectionTls, type NbdExport } from './connection.js';
import { IoOrder } from './io-order.js';

export interface NbdServerOptions {
  /** Unix socket to listen on; ignored when `tcp` is given. */
  socketPath: string;
  /**
   * Listen on TCP instead (a mirror target reached from another host). The export name is then
   * the capability: only the host that was told it can attach.
   */
  tcp?: { host: string; port: number };
  device: BlockDevice;
  /** Export name clients ask for; '' (the default) is what `nbd+unix:///?socket=` asks for. */
  exportName?: string;
  description?: string;
  /** Refuse writes with EPERM; forced on when the device itself is read-only. */
  readOnly?: boolean;
  log?: Logger;
  /**
   * Admission policy, asked for every new connection: return false to refuse it. Fencing
   * refuses everyone regardless.
   */
  admit?: () => boolean;
  /** NBD_OPT_STARTTLS with client certificates (mutual TLS). */
  tls?: NbdTlsOptions;
}

/**
 * Mutual TLS: clients must present a certificate that chains to `caPem` (the cluster CA);
 * we present `certPem`. QEMU's client takes this with a tls-creds-x509 object (endpoint=client,
 * a dir holding ca-cert.pem, client-cert.pem and client-key.pem).
 */
export interface NbdTlsOptions {
  certPem: string | Buffer;
  keyPem: string | Buffer;
  caPem: string | Buffer;
  /** Refuse every option but STARTTLS until TLS is on (default true: a client without TLS gets nothing). */
  required?: boolean;
}

export interface NbdServer {
  readonly socketPath: string;
  readonly exportName: string;
  readonly readOnly: boolean;
  /** Connected clients right now. */
  readonly clientCount: number;
  readonly fenced: boolean;
  /** Drops all clients, refuses new ones; resolves when no device I/O from us is in flight. */
  fence(): Promise<void>;
  /** Lets clients in again after a fence (the policy decided this host owns the disk again). */
  unfence(): void;
  /** Clean shutdown: stop accepting, finish in-flight requests, flush, remove the socket. */
  close(): Promise<void>;
}

export async function startNbdServer(opts: NbdServerOptions): Promise<NbdServer> {
  const log = opts.log ?? silentLogger;
  const exp: NbdExport = {
    name: opts.exportName ?? '',
    device: opts.device,
    readOnly: opts.readOnly === true || opts.device.readOnly,
    ...(opts.description ? { description: opts.description } : {}),
  };
  const order = new IoOrder();
  const tls: ConnectionTls | null = opts.tls ? tlsOf(opts.tls) : null;
  const conns = new Set<NbdConnection>();
  let fenced = false;
  let closing = false;

  const server = createServer((socket: Socket) => {
    if (closing || fenced || (opts.admit && !opts.admit())) {
      log.info('nbd client refused', { fenced, closing });
      socket.destroy();
      return;
    }
    const conn = new NbdConnection(socket, { export: exp, order, log, refusing: () => fenced || closing }, tls);
    conns.add(conn);
    socket.once('close', () => conns.delete(conn));
  });
  server.on('error', (err) => log.error('nbd server error', { err: err.message }));

  if (opts.tcp) {
    await listenTcp(server, opts.tcp.host, opts.tcp.port);
  } else {
    await listenUnix(server, opts.socketPath);
    await chmod(opts.socketPath, 0o600);
  }
  log.info('nbd server listening', {
    socket: opts.tcp ? `${opts.tcp.host}:${opts.tcp.port}` : opts.socketPath,
    export: exp.name,
    readOnly: exp.readOnly,
    tls: tls ? (tls.required ? 'required' : 'offered') : 'off',
  });

  let closed: Promise<void> | null = null;
  return {
    socketPath: opts.socketPath,
    exportName: exp.name,
    readOnly: exp.readOnly,
    get clientCount() {
      return conns.size;
    },
    get fenced() {
      return fenced;
    },
    async fence() {
      fenced = true;
      for (const c of conns) c.destroy();
      await order.idle();
    },
    unfence() {
      fenced = false;
    },
    close() {
      closed ??= (async () => {
        closing = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        await Promise.all([...conns].map((c) => c.shutdown()));
        await order.idle();
        if (!exp.readOnly) await exp.device.flush();
        await stopped;
        if (!opts.tcp)
          await unlink(opts.socketPath).catch((err: unknown) => {
            if (!isErrno(err, 'ENOENT')) throw err;
          });
        log.info('nbd server closed', { socket: opts.socketPath });
      })();
      return closed;
    },
  };
}

function tlsOf(o: NbdTlsOptions): ConnectionTls {
  try {
    const options = { cert: o.certPem, key: o.keyPem, ca: o.caPem, minVersion: 'TLSv1.2' as const };
    createSecureContext(options); // refuses a bad certificate, key or CA now, not at the first client
    return { options, required: o.required !== false };
  } catch (err) {
    throw new FdError(
      'FD_NBD_TLS_CONFIG',
      `the NBD server's TLS certificate, key or CA is not usable: ${(err as Error).message}`,
      {
        hint: 'check that the files are PEM, that the key belongs to the certificate, and that the CA file holds the CA certificate',
        cause: err,
      },
    );
  }
}

function listenTcp(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) =>
      reject(
        new FdError('FD_NBD_LISTEN_FAILED', `cannot listen on ${host}:${port}: ${err.message}`, {
          hint: 'pick another port, or check that the address belongs to this host',
          cause: err,
        }),
      );
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Listens on a unix socket, replacing a stale socket file but never a live server's. */
async function listenUnix(server: Server, path: string): Promise<void> {
  const listen = () =>
    new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
    });
  try {
    await listen();
  } catch (err) {
    if (!isErrno(err, 'EADDRINUSE')) throw socketError(path, err);
    if (await socketAlive(path)) {
      throw new FdError('FD_NBD_SOCKET_BUSY', `another server is listening on ${path}`, {
        hint: 'stop that server, or pass a different --socket',
        cause: err,
      });
    }
    await unlink(path);
    try {
      await listen();
    } catch (err2) {
      throw socketError(path, err2);
    }
  }
}

function socketError(path: string, cause: unknown): FdError {
  return new FdError('FD_NBD_SOCKET_FAILED', `cannot listen on unix socket ${path}: ${(cause as Error).message}`, {
    hint: 'check that the directory exists and is writable, and that the path is under 107 bytes',
    cause,
  });
}

function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
