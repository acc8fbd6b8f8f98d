/**
 * One NBD client connection: the fixed-newstyle handshake (handshake.ts), optionally upgraded
 * to TLS by NBD_OPT_STARTTLS, then the transmission phase (transmission.ts). Requests are
 * parsed synchronously as bytes arrive and dispatched without waiting for each other (QEMU
 * keeps up to 16 in flight); IoOrder keeps overlapping ones in order. This file holds the
 * socket, the parse loop and flow control: how many requests may be in flight, and when to
 * stop reading a client that does not read its replies.
 */
import type { Socket } from 'node:net';
import { createServer as createTlsServer, type TlsOptions, type TLSSocket } from 'node:tls';
import type { ConnectionContext } from './export.js';
import { Handshake } from './handshake.js';
import { Inbound } from './inbound.js';
import { ReplyWriter } from './replies.js';
import { parseRequest, type Request } from './requests.js';
import { Transmission } from './transmission.js';
import * as P from './protocol.js';

export type { ConnectionContext, NbdExport } from './export.js';

/** TLS for NBD_OPT_STARTTLS: our certificate and the CA that client certificates must chain to. */
export interface ConnectionTls {
  /** Certificate, key and CA (checked once when the server starts). */
  options: Pick<TlsOptions, 'cert' | 'key' | 'ca' | 'minVersion'>;
  /** Refuse every option but STARTTLS until TLS is on. */
  required: boolean;
}

/** Past this many requests in flight we stop reading the socket until some complete. */
const MAX_IN_FLIGHT = 64;
/** Adjacent reads queued together are served by one device read of at most this many bytes. */
const MAX_MERGED_READ_BYTES = 1024 * 1024;
/** A client that has not finished the handshake (TLS included) by then is dropped. */
const HANDSHAKE_TIMEOUT_MS = 30_000;

type State = 'flags' | 'options' | 'tls' | 'transmission' | 'closed';

export class NbdConnection {
  private socket: Socket;
  private state: State = 'flags';
  private readonly inbound = new Inbound();
  private readonly replies: ReplyWriter;
  private handshake: Handshake | null = null;
  private transmission: Transmission | null = null;
  private inFlight = 0;
  private paused = false;
  /** Reads parsed in this pass, dispatched together so contiguous ones become one device read. */
  private pendingReads: Request[] = [];
  private handshakeTimer: NodeJS.Timeout | null;
  private draining: (() => void) | null = null;
  private disconnecting = false;
  private readonly closed: Promise<void>;

  constructor(
    socket: Socket,
    private readonly ctx: ConnectionContext,
    private readonly tls: ConnectionTls | null = null,
  ) {
    this.socket = socket;
    this.replies = new ReplyWriter(socket, () => this.socket.pause());
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.setNoDelay?.(true);
    this.listen(socket);
    this.handshakeTimer = setTimeout(() => {
      this.ctx.log.warn('nbd client dropped', { reason: 'handshake not finished in time' });
      this.destroy();
    }, HANDSHAKE_TIMEOUT_MS);
    this.handshakeTimer.unref();
    const hello = Buffer.allocUnsafe(18);
    hello.writeBigUInt64BE(P.NBD_MAGIC, 0);
    hello.writeBigUInt64BE(P.NBD_IHAVEOPT, 8);
    hello.writeUInt16BE(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 16);
    socket.write(hello);
  }

  /** Drops the client at once; in-flight device calls finish but their replies are not sent. */
  destroy(): void {
    this.state = 'closed';
    this.socket.destroy();
  }

  /** Stops taking requests, lets in-flight ones reply, then closes the socket. */
  async shutdown(): Promise<void> {
    if (this.state === 'closed') return this.closed;
    this.state = 'closed';
    this.socket.pause();
    await this.quiesce();
    this.socket.end();
    this.socket.destroySoon?.();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    return this.closed;
  }

  private listen(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.ctx.log.debug('nbd client socket error', { err: err.message }));
    socket.on('close', () => {
      this.state = 'closed';
      this.endHandshakeTimer();
    });
    socket.on('drain', () => {
      if (!this.replies.backlog) return;
      this.replies.backlog = false;
      if (!this.paused) {
        this.socket.resume();
        this.safeParse();
      }
    });
  }

  private endHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  private quiesce(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.draining = resolve));
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed' || this.state === 'tls') return;
    this.inbound.push(chunk);
    this.safeParse();
  }

  /** Parses what is queued; malformed input drops this client only. */
  private safeParse(): void {
    try {
      this.parse();
    } catch (err) {
      this.ctx.log.warn('nbd client dropped', { reason: (err as Error).message });
      this.destroy();
    }
  }

  private parse(): void {
    try {
      this.parseQueued();
    } finally {
      this.flushReads();
    }
  }

  private parseQueued(): void {
    const q = this.inbound;
    for (;;) {
      if (this.state === 'flags') {
        if (q.length < 4) return;
        const [b, o] = q.peek(4);
        const flags = b.readUInt32BE(o);
        q.skip(4);
        if (flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) throw new Error('unknown client flags');
        const noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
        this.handshake = new Handshake(this.ctx, (buf) => this.socket.write(buf), noZeroes, this.tls);
        this.state = 'options';
      } else if (this.state === 'options') {
        if (q.length < 16) return;
        const [b, o] = q.peek(16);
        if (b.readBigUInt64BE(o) !== P.NBD_IHAVEOPT) throw new Error('bad option magic');
        const option = b.readUInt32BE(o + 8);
        const length = b.readUInt32BE(o + 12);
        if (length > P.MAX_OPTION_BYTES) throw new Error(`option ${option} data too long (${length} bytes)`);
        if (q.length < 16 + length) return;
        q.skip(16);
        if (!this.onOption(option, q.take(length))) return;
      } else if (this.state === 'transmission') {
        if (!this.parseRequest()) return;
      } else {
        return;
      }
    }
  }

  /** Returns false when parsing must stop (closing, or TLS starting). */
  private onOption(option: number, data: Buffer): boolean {
    const hs = this.handshake!;
    switch (hs.option(option, data)) {
      case 'continue':
        return true;
      case 'transmission':
        this.state = 'transmission';
        this.endHandshakeTimer();
        this.transmission = new Transmission(this.ctx, this.replies, {
          structured: hs.structured,
          baseAllocation: hs.baseAllocation,
          gone: () => this.socket.destroyed,
        });
        return true;
      case 'abort':
        this.state = 'closed';
        this.socket.end();
        return false;
      case 'starttls':
        // The client waits for our ACK before its TLS hello: anything queued now was sent in the clear.
        if (this.inbound.length) throw new Error('data after NBD_OPT_STARTTLS');
        this.startTls();
        return false;
    }
  }

  private startTls(): void {
    this.state = 'tls';
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('drain');
    // A tls.Server that never listens, handed the socket as if it had accepted it: that is the
    // path on which Node checks the client's certificate (and refuses one the CA did not sign).
    const server = createTlsServer({ ...this.tls!.options, requestCert: true, rejectUnauthorized: true });
    server.once('secureConnection', (tls: TLSSocket) => {
      if (this.state === 'closed') return tls.destroy();
      this.socket = tls;
      this.replies.useSocket(tls);
      this.listen(tls);
      this.ctx.log.debug('nbd client on TLS', { peer: tls.getPeerCertificate().subject?.CN });
      this.handshake!.secure = true;
      this.state = 'options';
      this.safeParse();
    });
    server.once('tlsClientError', (err: Error) => {
      this.ctx.log.warn('nbd client dropped', { reason: `TLS: ${err.message}` });
      this.destroy();
    });
    server.emit('connection', raw);
  }

  /** Parses one request if it is all here; returns false when parsing must wait. */
  private parseRequest(): boolean {
    const q = this.inbound;
    if (this.paused || this.replies.backlog || this.disconnecting) return false;
    if (q.length < P.REQUEST_SIZE) return false;
    const [b, o] = q.peek(P.REQUEST_SIZE);
    if (b.readUInt32BE(o) !== P.NBD_REQUEST_MAGIC) throw new Error('bad request magic');
    const req = parseRequest(b, o);
    let payload: Buffer | null = null;
    if (req.type === P.NBD_CMD_WRITE) {
      if (req.length > P.MAX_PAYLOAD_BYTES) {
        // The payload cannot be trusted to be there: answer, then drop the connection.
        this.ctx.log.warn('nbd client dropped', { reason: `write of ${req.length} bytes is over the limit` });
        this.replies.simple(req, P.NBD_EOVERFLOW);
        this.replies.flush();
        this.state = 'closed';
        this.socket.end();
        return false;
      }
      if (q.length < P.REQUEST_SIZE + req.length) return false;
      q.skip(P.REQUEST_SIZE);
      payload = q.take(req.length);
    } else {
      q.skip(P.REQUEST_SIZE);
    }
    if (req.type === P.NBD_CMD_READ && this.mergeable(req)) {
      this.pendingReads.push(req);
    } else {
      // Keep arrival order: reads parsed before this request are dispatched before it.
      this.flushReads();
      this.dispatch(req, payload);
    }
    return true;
  }

  private dispatch(req: Request, payload: Buffer | null): void {
    if (req.type === P.NBD_CMD_DISC) {
      this.disconnecting = true;
      void this.disconnect();
      return;
    }
    this.enter(1);
    void this.run(req, payload);
  }

  private enter(n: number): void {
    this.inFlight += n;
    if (this.inFlight >= MAX_IN_FLIGHT && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private async run(req: Request, payload: Buffer | null): Promise<void> {
    try {
      await this.transmission!.handle(req, payload);
    } catch (err) {
      // A bug, not a device error (those are answered inside handle): log and drop the client.
      this.ctx.log.error('nbd request handler failed', { err: String(err) });
      this.destroy();
    } finally {
      this.settle(1);
    }
  }

  /** Bookkeeping when `n` requests have been answered (or abandoned). */
  private settle(n: number): void {
    this.inFlight -= n;
    if (this.paused && this.inFlight < MAX_IN_FLIGHT / 2 && this.state === 'transmission') {
      this.paused = false;
      if (!this.replies.backlog) {
        this.socket.resume();
        this.safeParse();
      }
    }
    if (this.inFlight === 0 && this.draining) {
      const d = this.draining;
      this.draining = null;
      d();
    }
  }

  /**
   * Small valid reads of data are candidates for merging; anything else (holes included: they
   * cost no I/O) takes the ordinary path.
   */
  private mergeable(req: Request): boolean {
    return (
      req.length > 0 &&
      req.length <= MAX_MERGED_READ_BYTES / 2 &&
      (req.flags & ~(P.NBD_CMD_FLAG_DF | P.NBD_CMD_FLAG_FUA)) === 0 &&
      req.offset + req.length <= this.ctx.export.device.sizeBytes &&
      !this.transmission!.isHole(req.offset, req.length)
    );
  }

  /**
   * Dispatches the reads parsed in this pass. Sequential readers (a guest streaming a file,
   * qemu-img convert) pipeline adjacent reads; serving a run of them with one device read saves
   * a thread-pool round trip per request, which is most of what a small read costs us.
   */
  private flushReads(): void {
    const reads = this.pendingReads;
    if (reads.length === 0) return;
    this.pendingReads = [];
    if (reads.length === 1) return this.dispatch(reads[0]!, null);
    const sorted = [...reads].sort((a, b) => a.offset - b.offset);
    let run: Request[] = [sorted[0]!];
    let end = sorted[0]!.offset + sorted[0]!.length;
    const flushRun = () => {
      if (run.length === 1) this.dispatch(run[0]!, null);
      else this.dispatchMerged(run);
    };
    for (let i = 1; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (r.offset === end && end + r.length - run[0]!.offset <= MAX_MERGED_READ_BYTES) {
        run.push(r);
        end += r.length;
      } else {
        flushRun();
        run = [r];
        end = r.offset + r.length;
      }
    }
    flushRun();
  }

  private dispatchMerged(reqs: Request[]): void {
    this.enter(reqs.length);
    void (async () => {
      try {
        // A failed merged read is retried request by request, where each gets its own error
        // reply and log line.
        for (const r of await this.transmission!.merged(reqs)) this.dispatch(r, null);
      } catch (err) {
        this.ctx.log.error('nbd request handler failed', { err: String(err) });
        this.destroy();
      } finally {
        this.settle(reqs.length);
      }
    })();
  }

  private async disconnect(): Promise<void> {
    await this.quiesce();
    if (this.transmission?.wroteSinceFlush && !this.ctx.export.readOnly) {
      await this.ctx.export.device.flush().catch((err: unknown) => {
        this.ctx.log.warn('flush at client disconnect failed', { err: String(err) });
      });
    }
    this.state = 'closed';
    this.socket.end();
  }
}
