/**
 * Shared pieces of the NBD tests: temp dirs, QEMU's tools pointed at a socket, and a minimal
 * hand-written NBD client for what QEMU will not send (bad magic, oversized requests).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection, type Socket } from 'node:net';
import { run, type RunResult } from '../../src/core/process.js';

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export const nbdUrl = (socket: string, exportName = ''): string => `nbd+unix:///${exportName}?socket=${socket}`;

/** qemu-io on the NBD export; fails the test when a command reports an error. */
export async function qemuIo(
  socket: string,
  cmds: string[],
  opts: { allowFail?: boolean; readOnly?: boolean; /** instead of the default export on `socket` */ url?: string } = {},
): Promise<string> {
  const res = await run(
    'qemu-io',
    ['-f', 'raw', ...(opts.readOnly ? ['-r'] : []), ...cmds.flatMap((c) => ['-c', c]), opts.url ?? nbdUrl(socket)],
    {
      allowFail: true,
    },
  );
  const out = res.stdout + res.stderr;
  if (!opts.allowFail && (res.code !== 0 || /failed|error|mismatch/i.test(out))) {
    throw new Error(`qemu-io ${cmds.join(' ; ')} failed (exit ${res.code}):\n${out}`);
  }
  return out;
}

export function qemuImg(args: string[], opts: { allowFail?: boolean } = {}): Promise<RunResult> {
  return run('qemu-img', args, opts);
}

/** True when something accepts connections on the unix socket. */
export function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** A minimal NBD client speaking the raw protocol, for malformed-input tests. */
export class RawClient {
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  static connect(to: string | { host: string; port: number }): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = typeof to === 'string' ? createConnection(to) : createConnection(to);
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.buf.length}/${n} bytes`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves when the server has closed the connection. */
  async waitClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Fixed newstyle handshake up to transmission via NBD_OPT_GO; returns size and flags. */
  async handshake(opts: { structured?: boolean; exportName?: string } = {}): Promise<{ size: bigint; flags: number }> {
    const hello = await this.read(18);
    if (hello.toString('latin1', 0, 8) !== 'NBDMAGIC') throw new Error('no NBDMAGIC');
    this.socket.write(u32(3)); // FIXED_NEWSTYLE | NO_ZEROES
    if (opts.structured) {
      this.option(8, Buffer.alloc(0));
      const r = await this.optionReply();
      if (r.type !== 1) throw new Error(`structured reply refused: ${r.type}`);
    }
    const name = Buffer.from(opts.exportName ?? '');
    this.option(7, Buffer.concat([u32(name.length), name, u16(0)]));
    let size = 0n;
    let flags = 0;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === 1) break;
      if (r.type !== 3) throw new Error(`NBD_OPT_GO failed with reply type 0x${r.type.toString(16)}`);
      if (r.data.readUInt16BE(0) === 0) {
        size = r.data.readBigUInt64BE(2);
        flags = r.data.readUInt16BE(10);
      }
    }
    return { size, flags };
  }

  option(option: number, data: Buffer): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.read(20);
    const len = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: Buffer.from(await this.read(len)) };
  }

  request(
    type: number,
    cookie: number,
    offset: number,
    length: number,
    opts: { flags?: number; magic?: number } = {},
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(opts.magic ?? 0x25609513, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(cookie), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    this.socket.write(h);
  }

  /** A simple reply: error and cookie (data, if any, is read by the caller). */
  async simpleReply(): Promise<{ error: number; cookie: number }> {
    const h = await this.read(16);
    if (h.readUInt32BE(0) !== 0x67446698) throw new Error(`bad simple reply magic ${h.readUInt32BE(0).toString(16)}`);
    return { error: h.readUInt32BE(4), cookie: Number(h.readBigUInt64BE(8)) };
  }

  /** One structured reply chunk. */
  async chunk(): Promise<{ flags: number; type: number; cookie: number; payload: Buffer }> {
    const h = await this.read(20);
    if (h.readUInt32BE(0) !== 0x668e33ef)
      throw new Error(`bad structured reply magic ${h.readUInt32BE(0).toString(16)}`);
    const payload = Buffer.from(await this.read(h.readUInt32BE(16)));
    return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: Number(h.readBigUInt64BE(8)), payload };
  }

  close(): void {
    this.socket.destroy();
  }
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
