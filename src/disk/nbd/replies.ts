/**
 * Replies of the transmission phase, simple and structured. They go to a corked socket that is
 * flushed once per event-loop turn, so replies that complete together leave in one writev;
 * replies that carry a lot of data go at once (batching saves nothing when the copy dominates,
 * and the client can start on them sooner: measured, 64 KiB sequential reads ~20% faster).
 */
import type { Socket } from 'node:net';
import type { Request } from './requests.js';
import * as P from './protocol.js';

const EAGER_SEND_BYTES = 32 * 1024;
/** Chunk payloads up to this size are copied behind their header instead of written apart. */
const SMALL_CHUNK_BYTES = 4096;
/** Replies queued for a client that does not read them: past this we stop taking requests. */
const MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024;
/** Zeros sent for holes to clients that cannot take a hole chunk; never written to. */
const ZEROES = Buffer.alloc(1024 * 1024);

export class ReplyWriter {
  private corked = false;
  /** True while the client leaves more than MAX_QUEUED_REPLY_BYTES of replies unread. */
  backlog = false;

  constructor(
    private socket: Socket,
    private readonly onBacklog: () => void,
  ) {}

  /** After STARTTLS, replies go to the TLS socket. */
  useSocket(socket: Socket): void {
    this.socket = socket;
  }

  simple(req: Request, error: number, data: Buffer | null = null): void {
    const h = Buffer.allocUnsafe(P.SIMPLE_REPLY_SIZE);
    h.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
    h.writeUInt32BE(error, 4);
    h.writeUInt32BE(req.cookieHi, 8);
    h.writeUInt32BE(req.cookieLo, 12);
    this.write(h);
    if (data && !error) {
      this.write(data);
      if (data.length >= EAGER_SEND_BYTES) this.flush();
    }
  }

  /** A simple reply whose data is all zeros, from the shared zero buffer. */
  simpleZeroes(req: Request, length: number): void {
    this.simple(req, 0);
    this.zeroes(length);
  }

  chunk(req: Request, flags: number, type: number, payload: Buffer | null): void {
    const n = payload ? payload.length : 0;
    // Small chunks (holes, block status, errors) go out as one buffer: one socket write each.
    const h = Buffer.allocUnsafe(P.CHUNK_HEADER_SIZE + (n <= SMALL_CHUNK_BYTES ? n : 0));
    writeChunkHeader(h, req, flags, type, n);
    if (payload && n <= SMALL_CHUNK_BYTES) payload.copy(h, P.CHUNK_HEADER_SIZE);
    this.write(h);
    if (payload && n > SMALL_CHUNK_BYTES) this.write(payload);
  }

  data(req: Request, flags: number, offset: number, data: Buffer | null, length = data?.length ?? 0): void {
    const h = Buffer.allocUnsafe(P.CHUNK_HEADER_SIZE + 8);
    writeChunkHeader(h, req, flags, P.NBD_REPLY_TYPE_OFFSET_DATA, 8 + length);
    h.writeUInt32BE(Math.floor(offset / 0x100000000), 20);
    h.writeUInt32BE(offset >>> 0, 24);
    this.write(h);
    if (data) this.write(data);
    else this.zeroes(length);
    if (length >= EAGER_SEND_BYTES) this.flush();
  }

  hole(req: Request, flags: number, offset: number, length: number): void {
    const p = Buffer.allocUnsafe(12);
    p.writeBigUInt64BE(BigInt(offset), 0);
    p.writeUInt32BE(length, 8);
    this.chunk(req, flags, P.NBD_REPLY_TYPE_OFFSET_HOLE, p);
  }

  error(req: Request, error: number, message: string): void {
    const m = Buffer.from(message.slice(0, 1024), 'utf8');
    const p = Buffer.allocUnsafe(6 + m.length);
    p.writeUInt32BE(error, 0);
    p.writeUInt16BE(m.length, 4);
    m.copy(p, 6);
    this.chunk(req, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_ERROR, p);
  }

  /** Sends what is corked now instead of at the end of the turn. */
  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  private zeroes(length: number): void {
    for (let done = 0; done < length; done += ZEROES.length) {
      this.write(ZEROES.subarray(0, Math.min(ZEROES.length, length - done)));
    }
  }

  private write(buf: Buffer): void {
    if (this.socket.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(() => this.flush());
    }
    if (!this.socket.write(buf) && !this.backlog && this.socket.writableLength > MAX_QUEUED_REPLY_BYTES) {
      this.backlog = true;
      this.onBacklog();
    }
  }
}

function writeChunkHeader(h: Buffer, req: Request, flags: number, type: number, length: number): void {
  h.writeUInt32BE(P.NBD_STRUCTURED_REPLY_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeUInt32BE(req.cookieHi, 8);
  h.writeUInt32BE(req.cookieLo, 12);
  h.writeUInt32BE(length, 16);
}
