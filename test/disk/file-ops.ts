/**
 * Recording the file calls an image makes (write, writev, truncate, and the syncs between
 * them) and replaying them onto a copy of the file, for the crash-point tests.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

export type Op = { gen: number } & (
  { kind: 'write'; pos: number; data: Buffer } | { kind: 'truncate'; len: number } | { kind: 'sync' }
);

/** Runs `fn` while recording the writes made through file handles whose fd is in `fds`. */
export async function recording(fd: () => number, gen: () => number, fn: () => Promise<void>): Promise<Op[]> {
  const ops: Op[] = [];
  const probe = await open(join(process.cwd(), 'package.json'), 'r');
  const proto = Object.getPrototypeOf(probe) as FileHandle;
  await probe.close();
  const orig = {
    write: proto.write,
    writev: proto.writev,
    truncate: proto.truncate,
    sync: proto.sync,
    datasync: proto.datasync,
  };
  type AnyFn = (...args: unknown[]) => Promise<unknown>;
  const p = proto as unknown as Record<string, AnyFn>;
  p['write'] = async function (this: FileHandle, ...args: unknown[]) {
    const [buf, off, len, pos] = args as [Buffer, number, number, number];
    if (this.fd === fd()) ops.push({ gen: gen(), kind: 'write', pos, data: Buffer.from(buf.subarray(off, off + len)) });
    return (orig.write as unknown as AnyFn).apply(this, args);
  };
  p['writev'] = async function (this: FileHandle, ...args: unknown[]) {
    const [bufs, pos] = args as [Buffer[], number];
    if (this.fd === fd()) ops.push({ gen: gen(), kind: 'write', pos, data: Buffer.concat(bufs) });
    return (orig.writev as unknown as AnyFn).apply(this, args);
  };
  p['truncate'] = async function (this: FileHandle, ...args: unknown[]) {
    if (this.fd === fd()) ops.push({ gen: gen(), kind: 'truncate', len: args[0] as number });
    return (orig.truncate as unknown as AnyFn).apply(this, args);
  };
  for (const name of ['sync', 'datasync'] as const) {
    p[name] = async function (this: FileHandle, ...args: unknown[]) {
      const res = await (orig[name] as unknown as AnyFn).apply(this, args);
      // Recorded once it returned: it makes durable what was written before it was called.
      if (this.fd === fd()) ops.push({ gen: gen(), kind: 'sync' });
      return res;
    };
  }
  try {
    await fn();
  } finally {
    Object.assign(proto, orig);
  }
  return ops;
}

export function apply(state: Buffer, op: Op): Buffer {
  if (op.kind === 'sync') return state;
  if (op.kind === 'truncate') {
    if (op.len <= state.length) return state.subarray(0, op.len);
    return Buffer.concat([state, Buffer.alloc(op.len - state.length)]);
  }
  const end = op.pos + op.data.length;
  const out = end > state.length ? Buffer.concat([state, Buffer.alloc(end - state.length)]) : Buffer.from(state);
  op.data.copy(out, op.pos);
  return out;
}
