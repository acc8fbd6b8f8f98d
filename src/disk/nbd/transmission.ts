/**
 * Serving transmission-phase requests: each goes through the shared IoOrder, calls the device
 * and answers. Reads of what the device knows to be a hole (from memory, without I/O) are
 * answered with an NBD_REPLY_TYPE_OFFSET_HOLE chunk, or shared zeros for clients without
 * structured replies or that asked NBD_CMD_FLAG_DF; larger reads that mix data and holes are
 * split into data and hole chunks.
 *
 * Invariant: a FUA write, a flush, or a trim with FUA is acknowledged only after the device
 * call that makes it durable has resolved.
 */
import type { Extent } from '../block-device.js';
import type { ConnectionContext } from './export.js';
import type { Op } from './io-order.js';
import type { ReplyWriter } from './replies.js';
import { nbdErrno, validate, type Request } from './requests.js';
import * as P from './protocol.js';

/** Reads shorter than this whose map is not in memory are sent as one data chunk without asking. */
const HOLE_DETECT_MIN_BYTES = 256 * 1024;
/** A BLOCK_STATUS reply never carries more descriptors than this (the client asks again). */
const MAX_EXTENTS = 4096;

export interface TransmissionOptions {
  structured: boolean;
  baseAllocation: boolean;
  /** True once nobody will read our replies (fenced, or the client went away). */
  gone(): boolean;
}

export class Transmission {
  /** Writes since the last flush, so a disconnect flushes only when it has to. */
  wroteSinceFlush = false;

  constructor(
    private readonly ctx: ConnectionContext,
    private readonly replies: ReplyWriter,
    private readonly opts: TransmissionOptions,
  ) {}

  /** True when a read of this range needs no device I/O: the device knows it reads as zeros. */
  isHole(offset: number, length: number): boolean {
    const ext = this.ctx.export.device.cachedStatus?.(offset, length);
    return ext != null && ext.every((e) => e.zero);
  }

  async handle(req: Request, payload: Buffer | null): Promise<void> {
    const structuredReply =
      this.opts.structured && (req.type === P.NBD_CMD_READ || req.type === P.NBD_CMD_BLOCK_STATUS);
    const invalid = validate(req, this.ctx.export, this.opts.baseAllocation);
    if (invalid) {
      this.ctx.log.debug('nbd request refused', {
        type: req.type,
        flags: req.flags,
        offset: req.offset,
        length: req.length,
        errno: invalid,
      });
      if (structuredReply) this.replies.error(req, invalid, 'request refused');
      else this.replies.simple(req, invalid);
      return;
    }
    const order = this.ctx.order;
    const dev = this.ctx.export.device;
    const kind = req.type === P.NBD_CMD_FLUSH ? 'flush' : req.type === P.NBD_CMD_READ ? 'read' : 'write';
    const op: Op = order.enter(
      req.type === P.NBD_CMD_BLOCK_STATUS ? 'read' : kind,
      req.offset,
      req.offset + req.length,
    );
    try {
      if (op.ready) await op.ready;
      // Dropped (fenced, or the client went away) while queued behind an overlapping request:
      // nobody will see the reply, and after a fence the disk must not change any more.
      if (this.opts.gone()) return;
      const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
      switch (req.type) {
        case P.NBD_CMD_READ:
          return await this.read(req);
        case P.NBD_CMD_WRITE:
          this.wroteSinceFlush = true;
          if (req.length) await dev.write(req.offset, payload!, { fua });
          return this.replies.simple(req, 0);
        case P.NBD_CMD_WRITE_ZEROES:
          this.wroteSinceFlush = true;
          if (req.length) {
            await dev.writeZeroes(req.offset, req.length, {
              fua,
              mayTrim: (req.flags & P.NBD_CMD_FLAG_NO_HOLE) === 0,
            });
          }
          return this.replies.simple(req, 0);
        case P.NBD_CMD_TRIM:
          this.wroteSinceFlush = true;
          if (req.length) await dev.trim(req.offset, req.length);
          if (fua) await dev.flush();
          return this.replies.simple(req, 0);
        case P.NBD_CMD_FLUSH:
          this.wroteSinceFlush = false;
          await dev.flush();
          return this.replies.simple(req, 0);
        case P.NBD_CMD_BLOCK_STATUS:
          return await this.blockStatus(req);
      }
    } catch (err) {
      const errno = nbdErrno(err);
      this.ctx.log.warn('nbd request failed', {
        type: req.type,
        offset: req.offset,
        length: req.length,
        err: (err as Error).message,
      });
      if (structuredReply) this.replies.error(req, errno, (err as Error).message ?? 'I/O error');
      else this.replies.simple(req, errno);
    } finally {
      order.leave(op);
    }
  }

  /**
   * Serves adjacent reads with one device read. Returns the requests still to answer: all of
   * them when that read failed, so each is retried alone and gets its own error reply.
   */
  async merged(reqs: Request[]): Promise<Request[]> {
    const start = reqs[0]!.offset;
    const last = reqs[reqs.length - 1]!;
    const end = last.offset + last.length;
    const op = this.ctx.order.enter('read', start, end);
    let data: Buffer | null = null;
    try {
      if (op.ready) await op.ready;
      if (!this.opts.gone()) data = await this.ctx.export.device.read(start, end - start).catch(() => null);
    } finally {
      this.ctx.order.leave(op);
    }
    if (this.opts.gone()) return [];
    if (!data) return reqs;
    for (const r of reqs) {
      const slice = data.subarray(r.offset - start, r.offset - start + r.length);
      if (this.opts.structured) this.replies.data(r, P.NBD_REPLY_FLAG_DONE, r.offset, slice);
      else this.replies.simple(r, 0, slice);
    }
    return [];
  }

  private async read(req: Request): Promise<void> {
    const dev = this.ctx.export.device;
    const r = this.replies;
    if (req.length === 0) {
      if (this.opts.structured) r.chunk(req, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, null);
      else r.simple(req, 0);
      return;
    }
    const df = (req.flags & P.NBD_CMD_FLAG_DF) !== 0;
    const known = dev.cachedStatus?.(req.offset, req.length) ?? null;
    if (known && known.every((e) => e.zero)) {
      if (!this.opts.structured) r.simpleZeroes(req, req.length);
      else if (df) r.data(req, P.NBD_REPLY_FLAG_DONE, req.offset, null, req.length);
      else r.hole(req, P.NBD_REPLY_FLAG_DONE, req.offset, req.length);
      return;
    }
    if (!this.opts.structured) return r.simple(req, 0, await dev.read(req.offset, req.length));
    if (df || (known ? !known.some((e) => e.zero) : req.length < HOLE_DETECT_MIN_BYTES)) {
      return r.data(req, P.NBD_REPLY_FLAG_DONE, req.offset, await dev.read(req.offset, req.length));
    }
    const end = req.offset + req.length;
    const runs = zeroRuns(known ?? (await dev.blockStatus(req.offset, req.length)), req.offset, end);
    if (runs.length === 1 && !runs[0]!.zero) {
      return r.data(req, P.NBD_REPLY_FLAG_DONE, req.offset, await dev.read(req.offset, req.length));
    }
    // Read every data run first so an error can still be the one reply.
    const datas = await Promise.all(runs.map((x) => (x.zero ? null : dev.read(x.offset, x.length))));
    runs.forEach((x, i) => {
      const flags = i === runs.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
      if (x.zero) r.hole(req, flags, x.offset, x.length);
      else r.data(req, flags, x.offset, datas[i]!);
    });
  }

  private async blockStatus(req: Request): Promise<void> {
    const extents = await this.ctx.export.device.blockStatus(req.offset, req.length);
    const reqOne = (req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
    const max = reqOne ? 1 : MAX_EXTENTS;
    const descs: number[] = []; // length, flags pairs
    for (const e of extents) {
      const flags = (e.hole ? P.NBD_STATE_HOLE : 0) | (e.zero ? P.NBD_STATE_ZERO : 0);
      if (e.length === 0) continue;
      const n = descs.length;
      if (n && descs[n - 1] === flags) descs[n - 2]! += e.length;
      else if (n / 2 < max) descs.push(e.length, flags);
      else break;
    }
    if (descs.length === 0) throw new Error(`device returned no extents for ${req.offset}+${req.length}`);
    const p = Buffer.allocUnsafe(4 + descs.length * 4);
    p.writeUInt32BE(P.BASE_ALLOCATION_ID, 0);
    for (let i = 0; i < descs.length; i++) p.writeUInt32BE(descs[i]!, 4 + 4 * i);
    this.replies.chunk(req, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_BLOCK_STATUS, p);
  }
}

interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

/** Extents folded into alternating data / reads-as-zero runs, clipped to [start, end). */
function zeroRuns(extents: Extent[], start: number, end: number): Run[] {
  const runs: Run[] = [];
  let pos = start;
  for (const e of extents) {
    const s = Math.max(e.offset, pos);
    const t = Math.min(e.offset + e.length, end);
    if (t <= s) continue;
    if (s > pos) runs.push({ offset: pos, length: s - pos, zero: false }); // a gap: read it
    const zero = e.zero || e.hole;
    const last = runs[runs.length - 1];
    if (last && last.zero === zero && last.offset + last.length === s) last.length += t - s;
    else runs.push({ offset: s, length: t - s, zero });
    pos = t;
  }
  if (pos < end) runs.push({ offset: pos, length: end - pos, zero: false });
  return runs;
}
