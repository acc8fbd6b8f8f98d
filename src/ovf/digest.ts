/**
 * Digests for manifest checks, computed inline for small members and on a worker thread for
 * big ones: hashing a multi-GiB disk on the main thread would hold up the conversion that
 * reads the same bytes. Chunks are copied to the worker (the converter still needs its own).
 */
import { createHash, type Hash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { DigestAlgorithm } from './manifest.js';

export interface Digester {
  readonly algorithm: DigestAlgorithm;
  update(chunk: Buffer): void;
  /** Resolves when the digester can take more data (a worker that fell behind blocks here). */
  ready?(): Promise<void>;
  hex(): Promise<string>;
}

export class InlineDigest implements Digester {
  private readonly hash: Hash;
  constructor(readonly algorithm: DigestAlgorithm) {
    this.hash = createHash(algorithm);
  }
  update(chunk: Buffer): void {
    this.hash.update(chunk);
  }
  hex(): Promise<string> {
    return Promise.resolve(this.hash.digest('hex'));
  }
}

export type DigestMessage =
  | { op: 'open'; id: number; algorithm: DigestAlgorithm }
  | { op: 'data'; id: number; chunk: Uint8Array }
  | { op: 'end'; id: number };

export interface DigestReply {
  id: number;
  hex?: string;
  /** Bytes of a data message now hashed (flow control). */
  ack?: number;
  error?: string;
}

/** Bytes copied to the worker and not yet hashed before update() callers are made to wait. */
const MAX_OUTSTANDING_BYTES = 64 << 20;

/** One worker hashing any number of members; close() when the package is done. */
export class DigestThread {
  private worker: Worker | undefined;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve(hex: string): void; reject(e: Error): void }>();
  private failure: Error | undefined;
  private outstanding = 0;
  private wakeups: (() => void)[] = [];

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./digest-worker.js', import.meta.url));
    w.on('message', (m: DigestReply) => {
      if (m.ack !== undefined) {
        this.outstanding -= m.ack;
        if (this.outstanding < MAX_OUTSTANDING_BYTES) for (const wake of this.wakeups.splice(0)) wake();
        return;
      }
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.hex !== undefined) p?.resolve(m.hex);
      else p?.reject(new Error(m.error ?? 'digest worker failed'));
    });
    w.on('error', (e) => {
      this.failure = e;
      for (const p of this.waiting.values()) p.reject(e);
      this.waiting.clear();
      for (const wake of this.wakeups.splice(0)) wake();
    });
    this.worker = w;
    return w;
  }

  open(algorithm: DigestAlgorithm): Digester {
    const w = this.start();
    const id = this.seq++;
    w.postMessage({ op: 'open', id, algorithm } satisfies DigestMessage);
    return {
      algorithm,
      update: (chunk: Buffer) => {
        const copy = Buffer.allocUnsafeSlow(chunk.length);
        chunk.copy(copy);
        this.outstanding += copy.length;
        w.postMessage({ op: 'data', id, chunk: copy } satisfies DigestMessage, [copy.buffer as ArrayBuffer]);
      },
      ready: () =>
        this.outstanding < MAX_OUTSTANDING_BYTES || this.failure
          ? Promise.resolve()
          : new Promise<void>((resolve) => this.wakeups.push(resolve)),
      hex: () =>
        this.failure
          ? Promise.reject(this.failure)
          : new Promise<string>((resolve, reject) => {
              this.waiting.set(id, { resolve, reject });
              w.postMessage({ op: 'end', id } satisfies DigestMessage);
            }),
    };
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}
