/**
 * Inflates streamOptimized grains off the main thread, in batches, so an import uses the
 * host's other cores while the main thread reads, hashes and writes. Batches come back in the
 * order they were sent. With no workers it inflates inline (tests, tiny disks).
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { inflateRawSync, inflateSync } from 'node:zlib';
import type { InflateReply, InflateRequest } from './inflate-worker.js';

export class InflatePool {
  private workers: Worker[] = [];
  private next = 0;
  private seq = 0;
  private readonly pending = new Map<number, { resolve(v: (Buffer | null)[]): void; reject(e: unknown): void }>();

  /** `size` 0 inflates inline; undefined picks one worker per spare core (at least one). */
  constructor(
    private readonly chunkSize: number,
    private readonly size = Math.max(1, availableParallelism() - 1),
  ) {}

  private spawn(): void {
    for (let i = 0; i < this.size; i++) {
      const w = new Worker(new URL('./inflate-worker.js', import.meta.url));
      w.on('message', (m: InflateReply) => {
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        p?.resolve(m.out.map((u) => (u ? Buffer.from(u.buffer, u.byteOffset, u.byteLength) : null)));
      });
      w.on('error', (e) => {
        for (const p of this.pending.values()) p.reject(e);
        this.pending.clear();
      });
      this.workers.push(w);
    }
  }

  /** Inflated grains in the batch's order; null where a grain does not inflate. */
  inflate(grains: Buffer[]): Promise<(Buffer | null)[]> {
    if (this.size === 0) return Promise.resolve(grains.map((g) => inflateInline(g, this.chunkSize)));
    if (this.workers.length === 0) this.spawn();
    const id = this.seq++;
    const w = this.workers[this.next++ % this.workers.length]!;
    // Grains are views into big read buffers; cloning a view would copy its whole buffer, so
    // the batch is packed into one buffer of its own and moved to the worker.
    const lengths = grains.map((g) => g.length);
    const packed = Buffer.allocUnsafeSlow(lengths.reduce((a, b) => a + b, 0));
    let pos = 0;
    for (const g of grains) pos += g.copy(packed, pos);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const req: InflateRequest = { id, packed, lengths, chunkSize: this.chunkSize };
      w.postMessage(req, [packed.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    const ws = this.workers;
    this.workers = [];
    await Promise.all(ws.map((w) => w.terminate()));
  }
}

export function inflateInline(g: Buffer, chunkSize: number): Buffer | null {
  try {
    return inflateSync(g, { chunkSize });
  } catch {
    try {
      return inflateRawSync(g, { chunkSize });
    } catch {
      return null;
    }
  }
}
