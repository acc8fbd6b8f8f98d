/**
 * Tar writer for OVAs: ustar headers (what ovftool and VirtualBox write, and what every
 * importer reads), pax records only when a name or size does not fit ustar.
 */
import type { FileHandle } from 'node:fs/promises';

const BLOCK = 512;
const MAX_OCTAL_SIZE = 8 ** 11 - 1;

function octal(buf: Buffer, off: number, len: number, value: number): void {
  buf.write(value.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

function header(name: string, size: number, mtimeS: number, type: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(name.slice(0, 100), 0, 100, 'utf8');
  octal(b, 100, 8, 0o644);
  octal(b, 108, 8, 0);
  octal(b, 116, 8, 0);
  octal(b, 124, 12, Math.min(size, MAX_OCTAL_SIZE));
  octal(b, 136, 12, mtimeS);
  b.write(type, 156, 1, 'latin1');
  b.write('ustar\0', 257, 6, 'latin1');
  b.write('00', 263, 2, 'latin1');
  b.write('someone', 265, 32, 'latin1');
  b.write('someone', 297, 32, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return b;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return `${len}${body}`;
}

/** Appends members to an open file; call finish() to write the end-of-archive blocks. */
export class TarWriter {
  private pos = 0;
  constructor(
    private readonly fh: FileHandle,
    private readonly mtimeS = Math.floor(Date.now() / 1000),
  ) {}

  get offset(): number {
    return this.pos;
  }

  private async put(buf: Buffer): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done, this.pos + done);
      done += bytesWritten;
    }
    this.pos += buf.length;
  }

  private async headerFor(name: string, size: number): Promise<void> {
    const nameFits = Buffer.byteLength(name) <= 100;
    if (!nameFits || size > MAX_OCTAL_SIZE) {
      const data = Buffer.from(
        (nameFits ? '' : paxRecord('path', name)) + (size > MAX_OCTAL_SIZE ? paxRecord('size', String(size)) : ''),
      );
      await this.put(header('PaxHeader', data.length, this.mtimeS, 'x'));
      await this.put(Buffer.concat([data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK)]));
    }
    await this.put(header(name, size, this.mtimeS, '0'));
  }

  async addBuffer(name: string, data: Buffer): Promise<void> {
    await this.addStream(name, data.length, [data]);
  }

  /** Writes a member of exactly `size` bytes from `body`. */
  async addStream(name: string, size: number, body: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    await this.headerFor(name, size);
    let n = 0;
    for await (const chunk of body) {
      n += chunk.length;
      if (n > size) throw new Error(`tar member ${name} is longer than its declared ${size} bytes`);
      await this.put(chunk);
    }
    if (n !== size) throw new Error(`tar member ${name} has ${n} bytes, declared ${size}`);
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if (pad) await this.put(Buffer.alloc(pad));
  }

  async finish(): Promise<void> {
    await this.put(Buffer.alloc(BLOCK * 2));
  }
}
