/**
 * Bytes received on a socket, queued as the chunks they arrived in. Parsers look at fixed-size
 * headers in place and take payloads as views of the received chunk when one chunk holds them
 * all, so the hot path (a 4 KiB write arriving in one chunk) copies nothing.
 */
export class Inbound {
  private chunks: Buffer[] = [];
  private head = 0; // offset into chunks[0]
  private total = 0;
  private readonly scratch = Buffer.allocUnsafe(64);

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /**
   * A view of the next `n` bytes (n <= 64) without consuming them: [buffer, offset]. The view
   * is valid until the next call that consumes or peeks.
   */
  peek(n: number): [Buffer, number] {
    if (n > this.scratch.length) throw new Error('Inbound.peek: header larger than scratch');
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return [first, this.head];
    this.copyOut(this.scratch, n);
    return [this.scratch, 0];
  }

  /** Consumes and returns the next `n` bytes (a view when they sit in one chunk). */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.skip(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyOut(out, n);
    this.skip(n);
    return out;
  }

  skip(n: number): void {
    this.total -= n;
    while (n > 0) {
      const first = this.chunks[0]!;
      const avail = first.length - this.head;
      if (n < avail) {
        this.head += n;
        return;
      }
      n -= avail;
      this.chunks.shift();
      this.head = 0;
    }
  }

  private copyOut(target: Buffer, n: number): void {
    let copied = 0;
    let pos = this.head;
    for (const c of this.chunks) {
      const len = Math.min(c.length - pos, n - copied);
      c.copy(target, copied, pos, pos + len);
      copied += len;
      pos = 0;
      if (copied === n) return;
    }
    throw new Error('Inbound.copyOut: not enough bytes queued');
  }
}
