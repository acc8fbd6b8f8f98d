/** Worker side of DigestThread: one running hash per open member, digest on "end". */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import type { DigestMessage, DigestReply } from './digest.js';

const hashes = new Map<number, Hash>();

parentPort?.on('message', (m: DigestMessage) => {
  if (m.op === 'open') hashes.set(m.id, createHash(m.algorithm));
  else if (m.op === 'data') {
    hashes.get(m.id)?.update(m.chunk);
    parentPort!.postMessage({ id: m.id, ack: m.chunk.length } satisfies DigestReply);
  } else {
    const h = hashes.get(m.id);
    hashes.delete(m.id);
    const reply: DigestReply = h ? { id: m.id, hex: h.digest('hex') } : { id: m.id, error: `no digest ${m.id}` };
    parentPort!.postMessage(reply);
  }
});
