/**
 * Transmission-phase requests: the parsed header, the checks every request passes before it
 * reaches the device, and the mapping of device errors to the errno the client sees.
 */
import type { NbdExport } from './export.js';
import * as P from './protocol.js';

export interface Request {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  offset: number;
  length: number;
}

/** The 28-byte request header at b[o..]; the magic is checked by the caller. */
export function parseRequest(b: Buffer, o: number): Request {
  const offsetHi = b.readUInt32BE(o + 16);
  return {
    flags: b.readUInt16BE(o + 4),
    type: b.readUInt16BE(o + 6),
    cookieHi: b.readUInt32BE(o + 8),
    cookieLo: b.readUInt32BE(o + 12),
    // Offsets past 2^53 cannot be a real position on any export we serve: make them huge.
    offset: offsetHi > 0x1fffff ? Number.MAX_SAFE_INTEGER : offsetHi * 0x100000000 + b.readUInt32BE(o + 20),
    length: b.readUInt32BE(o + 24),
  };
}

/** Checks flags and bounds; returns an NBD errno or 0. */
export function validate(req: Request, exp: NbdExport, baseAllocation: boolean): number {
  const size = exp.device.sizeBytes;
  const end = req.offset + req.length;
  const ro = exp.readOnly;
  switch (req.type) {
    case P.NBD_CMD_READ:
      if (req.flags & ~(P.NBD_CMD_FLAG_DF | P.NBD_CMD_FLAG_FUA)) return P.NBD_EINVAL;
      if (req.length > P.MAX_PAYLOAD_BYTES) return P.NBD_EOVERFLOW;
      return end > size ? P.NBD_EINVAL : 0;
    case P.NBD_CMD_WRITE:
    case P.NBD_CMD_WRITE_ZEROES:
      if (req.flags & ~(P.NBD_CMD_FLAG_FUA | P.NBD_CMD_FLAG_NO_HOLE)) return P.NBD_EINVAL;
      if (ro) return P.NBD_EPERM;
      return end > size ? P.NBD_ENOSPC : 0;
    case P.NBD_CMD_TRIM:
      if (req.flags & ~P.NBD_CMD_FLAG_FUA) return P.NBD_EINVAL;
      if (ro) return P.NBD_EPERM;
      return end > size ? P.NBD_EINVAL : 0;
    case P.NBD_CMD_FLUSH:
      return req.flags ? P.NBD_EINVAL : 0;
    case P.NBD_CMD_BLOCK_STATUS:
      if (req.flags & ~P.NBD_CMD_FLAG_REQ_ONE) return P.NBD_EINVAL;
      if (!baseAllocation || req.length === 0) return P.NBD_EINVAL;
      return end > size ? P.NBD_EINVAL : 0;
    default:
      return P.NBD_EINVAL;
  }
}

/** Maps a device error to the NBD errno the client sees. */
export function nbdErrno(err: unknown): number {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return P.NBD_ENOSPC;
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return P.NBD_EPERM;
    case 'EINVAL':
      return P.NBD_EINVAL;
    case 'ENOMEM':
      return P.NBD_ENOMEM;
    default:
      return P.NBD_EIO;
  }
}
