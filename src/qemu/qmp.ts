/**
 * Our own QMP client over a unix socket: the one control channel to a running QEMU. It does the
 * greeting and capability negotiation, numbers commands so replies find their caller, gives each
 * command its own timeout and turns QEMU's asynchronous events into an EventEmitter.
 * When QEMU goes away every pending command fails with FD_QMP_CLOSED, never hangs.
 */
import { EventEmitter } from 'node:events';
import { createConnection, type Socket } from 'node:net';
import { FdError } from '../core/errors.js';

/** An asynchronous QEMU event as it arrives on the wire. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** QEMU's wall-clock timestamp of the event, in microseconds since the epoch. */
  timestampUs: number;
}

/** Events a VM runner cares about; any other event is still emitted under its own name. */
export const QMP_EVENTS = [
  'SHUTDOWN',
  'POWERDOWN',
  'RESET',
  'STOP',
  'RESUME',
  'SUSPEND',
  'WAKEUP',
  'GUEST_PANICKED',
  'MIGRATION',
  'MIGRATION_PASS',
  'BLOCK_JOB_COMPLETED',
  'BLOCK_JOB_CANCELLED',
  'BLOCK_JOB_ERROR',
  'BLOCK_JOB_READY',
  'BLOCK_JOB_PENDING',
  'JOB_STATUS_CHANGE',
  'BLOCK_IO_ERROR',
  'DEVICE_TRAY_MOVED',
  'DEVICE_DELETED',
  'NIC_RX_FILTER_CHANGED',
] as const;

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpConnectOptions {
  /** How long to wait for the socket, the greeting and qmp_capabilities together. */
  timeoutMs?: number;
  /** Default timeout for each command unless the call gives its own. */
  commandTimeoutMs?: number;
}

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/**
 * What the control layer needs of a QMP connection: commands, and events by name (`event` for
 * every event). QmpClient is the real one; tests can put a scripted one in its place.
 */
export interface QmpChannel {
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T>;
  waitEvent(name: string, opts: { timeoutMs: number; pred?: (ev: QmpEvent) => boolean }): Promise<QmpEvent>;
  on(event: string, listener: (ev: QmpEvent) => void): this;
  off(event: string, listener: (ev: QmpEvent) => void): this;
}

/**
 * Events: `event` (QmpEvent) for every event, `<NAME>` (QmpEvent) per event name, and `close`
 * (FdError | undefined) once, when the connection ends for any reason.
 */
export class QmpClient extends EventEmitter implements QmpChannel {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedWith: FdError | undefined;
  private isClosed = false;
  greeting: QmpGreeting | undefined;

  private constructor(
    private readonly sock: Socket,
    readonly path: string,
    private readonly commandTimeoutMs: number,
  ) {
    super();
  }

  /** Connects, reads the greeting and leaves capability negotiation mode. */
  static async connect(path: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = createConnection({ path });
    const client = new QmpClient(sock, path, opts.commandTimeoutMs ?? 30_000);
    const greeting = new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new FdError('FD_QMP_TIMEOUT', `no QMP greeting on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      client.once('greeting', (g: QmpGreeting) => {
        clearTimeout(timer);
        resolve(g);
      });
      client.once('close', (err?: FdError) => {
        clearTimeout(timer);
        reject(err ?? new FdError('FD_QMP_CLOSED', `QMP socket ${path} closed before the greeting`));
      });
    });
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => client.onData(chunk));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const connectFailed = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      client.finish(
        connectFailed
          ? new FdError('FD_QMP_CONNECT', `cannot connect to QMP socket ${path}: ${err.code}`, {
              hint: 'is the VM running? its QEMU process may have exited',
              cause: err,
            })
          : new FdError('FD_QMP_CLOSED', `QMP connection ${path} failed: ${err.message}`, { cause: err }),
      );
    });
    sock.on('close', () => client.finish(undefined));
    try {
      client.greeting = await greeting;
      await client.execute('qmp_capabilities', undefined, { timeoutMs });
    } catch (err) {
      client.sock.destroy();
      throw err;
    }
    return client;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Runs one command; rejects with FD_QMP_ERROR (QEMU's class and desc), _TIMEOUT or _CLOSED. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.isClosed) {
      return Promise.reject(
        this.closedWith ?? new FdError('FD_QMP_CLOSED', `QMP connection ${this.path} is closed (QEMU went away)`),
      );
    }
    const id = `fd-${this.nextId++}`;
    const timeoutMs = opts.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new FdError('FD_QMP_TIMEOUT', `QMP command ${command} got no reply within ${timeoutMs} ms`, {
            hint: 'QEMU may be hung; force stop the VM',
          }),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg = JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id });
      this.sock.write(msg + '\n');
    });
  }

  /** Resolves with the next event of this name (optionally matching `pred`), or rejects on timeout/close. */
  waitEvent(name: string, opts: { timeoutMs: number; pred?: (ev: QmpEvent) => boolean }): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (ev: QmpEvent): void => {
        if (opts.pred && !opts.pred(ev)) return;
        cleanup();
        resolve(ev);
      };
      const onClose = (err?: FdError): void => {
        cleanup();
        reject(err ?? new FdError('FD_QMP_CLOSED', `QMP connection closed while waiting for ${name}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new FdError('FD_QMP_TIMEOUT', `no ${name} event within ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off(name, onEvent);
        this.off('close', onClose);
      };
      this.on(name, onEvent);
      this.on('close', onClose);
    });
  }

  /** Closes our side; QEMU keeps running. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    const closed = new Promise<void>((r) => this.once('close', () => r()));
    this.sock.end();
    setTimeout(() => this.sock.destroy(), 500).unref();
    await closed;
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch (err) {
      this.finish(
        new FdError('FD_QMP_PROTOCOL', `QMP peer sent a line that is not JSON: ${line.slice(0, 200)}`, { cause: err }),
      );
      this.sock.destroy();
      return;
    }
    if ('QMP' in msg) {
      this.emit('greeting', msg['QMP']);
      return;
    }
    if (typeof msg['event'] === 'string') {
      const ts = msg['timestamp'] as { seconds: number; microseconds: number } | undefined;
      const ev: QmpEvent = {
        event: msg['event'],
        data: (msg['data'] as Record<string, unknown> | undefined) ?? {},
        timestampUs: ts ? ts.seconds * 1e6 + ts.microseconds : Date.now() * 1000,
      };
      this.emit('event', ev);
      this.emit(ev.event, ev);
      return;
    }
    const id = typeof msg['id'] === 'string' ? msg['id'] : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return; // a reply to a command that already timed out
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const e = msg['error'] as { class: string; desc: string };
      p.reject(
        new FdError('FD_QMP_ERROR', `QEMU refused ${p.command}: ${e.desc}`, {
          details: { command: p.command, class: e.class, desc: e.desc },
        }),
      );
    } else p.resolve(msg['return']);
  }

  private finish(err: FdError | undefined): void {
    if (this.isClosed) {
      return;
    }
    this.isClosed = true;
    this.closedWith = err;
    const failure = err ?? new FdError('FD_QMP_CLOSED', `QMP connection ${this.path} closed (QEMU went away)`);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new FdError('FD_QMP_CLOSED', `QMP command ${p.command} lost: ${failure.message}`, { cause: failure }));
    }
    this.sock.destroy();
    this.emit('close', err);
  }
}
