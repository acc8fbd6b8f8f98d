/**
 * The option haggling of fixed-newstyle NBD, after the client's flags and before the
 * transmission phase: structured replies, base:allocation, INFO/GO, STARTTLS. Export names
 * are never listed, and with TLS required nothing but STARTTLS is answered in the clear.
 */
import type { ConnectionContext } from './export.js';
import * as P from './protocol.js';

/** What the connection does after an option: go on haggling, serve, close, or start TLS. */
export type OptionOutcome = 'continue' | 'transmission' | 'abort' | 'starttls';

export interface HandshakeTls {
  /** Refuse every option but STARTTLS (and ABORT) until TLS is on. */
  required: boolean;
}

export class Handshake {
  structured = false;
  baseAllocation = false;
  /** TLS is on (STARTTLS went through). */
  secure = false;

  constructor(
    private readonly ctx: ConnectionContext,
    private readonly send: (buf: Buffer) => void,
    private readonly noZeroes: boolean,
    private readonly tls: HandshakeTls | null,
  ) {}

  private optionReply(option: number, type: number, data?: Buffer): void {
    const h = Buffer.allocUnsafe(20);
    h.writeBigUInt64BE(P.NBD_OPT_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data ? data.length : 0, 16);
    this.send(data ? Buffer.concat([h, data]) : h);
  }

  private optionError(option: number, type: number, message: string): 'continue' {
    this.optionReply(option, type, Buffer.from(message, 'utf8'));
    return 'continue';
  }

  private transmissionFlags(): number {
    let flags =
      P.NBD_FLAG_HAS_FLAGS |
      P.NBD_FLAG_SEND_FLUSH |
      P.NBD_FLAG_SEND_FUA |
      P.NBD_FLAG_SEND_TRIM |
      P.NBD_FLAG_SEND_WRITE_ZEROES |
      // One device object serves every connection, so a flush on one covers writes from all.
      P.NBD_FLAG_CAN_MULTI_CONN;
    if (this.ctx.export.readOnly) flags |= P.NBD_FLAG_READ_ONLY;
    if (this.structured) flags |= P.NBD_FLAG_SEND_DF;
    return flags;
  }

  /** Handles one option; throws when the protocol says to close (the caller drops the client). */
  option(option: number, data: Buffer): OptionOutcome {
    const exp = this.ctx.export;
    if (this.tls?.required && !this.secure) {
      // Nothing but TLS (or leaving) in the clear; NBD_OPT_EXPORT_NAME cannot be answered with an error.
      if (option === P.NBD_OPT_EXPORT_NAME) throw new Error('NBD_OPT_EXPORT_NAME before STARTTLS');
      if (option !== P.NBD_OPT_STARTTLS && option !== P.NBD_OPT_ABORT) {
        return this.optionError(
          option,
          P.NBD_REP_ERR_TLS_REQD,
          'this server requires TLS: send NBD_OPT_STARTTLS first',
        );
      }
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        // No way to send an error here: the protocol says close.
        if (this.ctx.refusing()) throw new Error('refused: server is fenced or closing');
        if (data.toString('utf8') !== exp.name) throw new Error(`unknown export "${data.toString('utf8')}"`);
        const r = Buffer.alloc(this.noZeroes ? 10 : 10 + 124);
        r.writeBigUInt64BE(BigInt(exp.device.sizeBytes), 0);
        r.writeUInt16BE(this.transmissionFlags(), 8);
        this.send(r);
        return 'transmission';
      }
      case P.NBD_OPT_ABORT:
        this.optionReply(option, P.NBD_REP_ACK);
        return 'abort';
      case P.NBD_OPT_LIST:
        // Export names are capabilities (a mirror's name is its secret): never listed.
        return this.optionError(option, P.NBD_REP_ERR_POLICY, 'this server does not list its exports');
      case P.NBD_OPT_STARTTLS:
        if (data.length !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
        if (!this.tls) return this.optionError(option, P.NBD_REP_ERR_POLICY, 'this server does not offer TLS');
        if (this.secure) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'TLS is already on');
        this.optionReply(option, P.NBD_REP_ACK);
        // What was negotiated in the clear could have been injected: it starts over.
        this.structured = false;
        this.baseAllocation = false;
        return 'starttls';
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.handleInfo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'option takes no data');
        if (this.structured) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'already negotiated');
        this.structured = true;
        this.optionReply(option, P.NBD_REP_ACK);
        return 'continue';
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        return this.handleMetaContext(option, data);
      default:
        return this.optionError(option, P.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
    }
  }

  private handleInfo(option: number, data: Buffer): OptionOutcome {
    const exp = this.ctx.export;
    if (data.length < 6) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'option data too short');
    const nameLen = data.readUInt32BE(0);
    if (4 + nameLen + 2 > data.length) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'bad name length');
    const name = data.toString('utf8', 4, 4 + nameLen);
    const count = data.readUInt16BE(4 + nameLen);
    if (4 + nameLen + 2 + 2 * count !== data.length) {
      return this.optionError(option, P.NBD_REP_ERR_INVALID, 'bad information request count');
    }
    const wanted = new Set<number>();
    for (let i = 0; i < count; i++) wanted.add(data.readUInt16BE(4 + nameLen + 2 + 2 * i));
    if (this.ctx.refusing()) return this.optionError(option, P.NBD_REP_ERR_SHUTDOWN, 'server is not accepting clients');
    if (name !== exp.name) return this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);

    const info = Buffer.allocUnsafe(12);
    info.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
    info.writeBigUInt64BE(BigInt(exp.device.sizeBytes), 2);
    info.writeUInt16BE(this.transmissionFlags(), 10);
    this.optionReply(option, P.NBD_REP_INFO, info);
    if (wanted.has(P.NBD_INFO_NAME)) {
      const n = Buffer.from(exp.name, 'utf8');
      const d = Buffer.allocUnsafe(2 + n.length);
      d.writeUInt16BE(P.NBD_INFO_NAME, 0);
      n.copy(d, 2);
      this.optionReply(option, P.NBD_REP_INFO, d);
    }
    if (wanted.has(P.NBD_INFO_DESCRIPTION) && exp.description) {
      const n = Buffer.from(exp.description, 'utf8');
      const d = Buffer.allocUnsafe(2 + n.length);
      d.writeUInt16BE(P.NBD_INFO_DESCRIPTION, 0);
      n.copy(d, 2);
      this.optionReply(option, P.NBD_REP_INFO, d);
    }
    // Always sent, as QEMU's server does. A client that did not ask for block sizes may not
    // honour a minimum, so it gets 1 (BlockDevice is byte-addressed).
    const bs = Buffer.allocUnsafe(14);
    bs.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(wanted.has(P.NBD_INFO_BLOCK_SIZE) ? P.MIN_BLOCK_BYTES : 1, 2);
    bs.writeUInt32BE(P.PREFERRED_BLOCK_BYTES, 6);
    bs.writeUInt32BE(P.MAX_PAYLOAD_BYTES, 10);
    this.optionReply(option, P.NBD_REP_INFO, bs);
    this.optionReply(option, P.NBD_REP_ACK);
    return option === P.NBD_OPT_GO ? 'transmission' : 'continue';
  }

  private handleMetaContext(option: number, data: Buffer): 'continue' {
    const exp = this.ctx.export;
    if (!this.structured) {
      return this.optionError(option, P.NBD_REP_ERR_INVALID, 'negotiate structured replies first');
    }
    let pos = 0;
    const readString = (): string | null => {
      if (pos + 4 > data.length) return null;
      const len = data.readUInt32BE(pos);
      if (pos + 4 + len > data.length) return null;
      const s = data.toString('utf8', pos + 4, pos + 4 + len);
      pos += 4 + len;
      return s;
    };
    const name = readString();
    if (name === null || pos + 4 > data.length) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'truncated');
    const count = data.readUInt32BE(pos);
    pos += 4;
    const queries: string[] = [];
    for (let i = 0; i < count; i++) {
      const q = readString();
      if (q === null) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'truncated query');
      queries.push(q);
    }
    if (pos !== data.length) return this.optionError(option, P.NBD_REP_ERR_INVALID, 'trailing data');
    if (name !== exp.name) return this.optionError(option, P.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);

    const list = option === P.NBD_OPT_LIST_META_CONTEXT;
    const matches = list
      ? count === 0 || queries.some((q) => q === 'base:' || q === P.BASE_ALLOCATION)
      : queries.includes(P.BASE_ALLOCATION);
    if (matches) {
      const n = Buffer.from(P.BASE_ALLOCATION, 'utf8');
      const d = Buffer.allocUnsafe(4 + n.length);
      d.writeUInt32BE(list ? 0 : P.BASE_ALLOCATION_ID, 0);
      n.copy(d, 4);
      this.optionReply(option, P.NBD_REP_META_CONTEXT, d);
    }
    if (!list) this.baseAllocation = matches;
    this.optionReply(option, P.NBD_REP_ACK);
    return 'continue';
  }
}
