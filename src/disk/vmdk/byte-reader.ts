/**
 * Pulls exact byte counts out of a chunked stream (a file read stream, a tar member body)
 * without copying more than needed: the streaming VMDK converter and the OVA tar reader both
 * parse binary records that straddle chunk boundaries.
 */
/** Anything that yields bytes: a stream, an async generator, or an array of buffers. */
export type ByteSource = AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | Uint8Array | string>;

function syncToAsync<T>(it: Iterator<T>): AsyncIterator<T> {
  return {
    next: async () => it.next(),
    return: async () => it.return?.() ?? { done: true, value: undefined },
  };
}

export class ByteReader {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  /** Bytes handed out so far (the stream offset of the next byte). */
  position = 0;

  constructor(source: ByteSource) {
    const inner: AsyncIterator<Buffer | Uint8Array | string> =
      Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : syncToAsync(source[Symbol.iterator]());
    this.it = {
      next: async () => {
        const r = await inner.next();
        if (r.done) return { done: true, value: undefined };
        const v = r.value;
        return { done: false, value: typeof v === 'string' ? Buffer.from(v) : Buffer.isBuffer(v) ? v : Buffer.from(v) };
      },
      return: async () => {
        await inner.return?.();
        return { done: true, value: undefined };
      },
    };
  }

  private async pull(): Promise<Buffer | undefined> {
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length > 0) return r.value as Buffer;
    }
    return undefined;
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n) {
      const next = await this.pull();
      if (!next) return false;
      this.buf = this.buf.length === 0 ? next : Buffer.concat([this.buf, next]);
    }
    return true;
  }

  /** Exactly n bytes, or fewer only when the stream ended (the caller decides if that is an error). */
  async read(n: number): Promise<Buffer> {
    if (this.buf.length < n) {
      // Copy only the n bytes asked for; the rest of the last chunk stays as it is.
      const parts: Buffer[] = [this.buf];
      let have = this.buf.length;
      this.buf = Buffer.alloc(0);
      while (have < n) {
        const next = await this.pull();
        if (!next) break;
        const take = Math.min(next.length, n - have);
        parts.push(next.subarray(0, take));
        have += take;
        if (take < next.length) this.buf = next.subarray(take);
      }
      const out = Buffer.concat(parts, have);
      this.position += out.length;
      return out;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.position += n;
    return out;
  }

  /** Up to n bytes as they arrive, for copying large bodies without buffering them whole. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill(1))) return;
      const out = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(out.length);
      this.position += out.length;
      left -= out.length;
      yield out;
    }
  }

  /** Discards n bytes; returns how many were actually there. */
  async skip(n: number): Promise<number> {
    let skipped = 0;
    for await (const c of this.chunks(n)) skipped += c.length;
    return skipped;
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}
