/**
 * Worker side of the parallel grain inflater: takes batches of compressed grains, answers with
 * the inflated grains (transferred, not copied) or null for a grain that does not inflate.
 */
import { parentPort } from 'node:worker_threads';
import { inflateRawSync, inflateSync } from 'node:zlib';

export interface InflateRequest {
  id: number;
  /** The batch's compressed grains back to back (one transferred buffer, not many views). */
  packed: Uint8Array;
  lengths: number[];
  chunkSize: number;
}

export interface InflateReply {
  id: number;
  out: (Uint8Array | null)[];
}

function inflateOne(g: Uint8Array, chunkSize: number): Buffer | null {
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

parentPort?.on('message', (msg: InflateRequest) => {
  const out: (Uint8Array | null)[] = [];
  const transfer = new Set<ArrayBuffer>();
  let pos = 0;
  for (const len of msg.lengths) {
    const b = inflateOne(msg.packed.subarray(pos, pos + len), msg.chunkSize);
    pos += len;
    out.push(b);
    // zlib's output is a view into a buffer of its own (chunkSize long): move it rather than
    // clone it. Buffers no bigger than Node's pool might share it with others: those are cloned.
    if (b && b.buffer instanceof ArrayBuffer && b.buffer.byteLength > Buffer.poolSize) transfer.add(b.buffer);
  }
  parentPort!.postMessage({ id: msg.id, out } satisfies InflateReply, [...transfer]);
});
