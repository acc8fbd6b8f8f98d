/**
 * Positioned reads and writes that never return short: a short read means the file ends before
 * the structure we expected, which is the stable FD_VHD_TRUNCATED error, not a silent zero fill.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { isErrno } from '../../core/errors.js';
import { vhdError } from './errors.js';

/** Opens an image file; the errors a user can cause (missing, a directory, no permission) get codes. */
export async function openImageFile(path: string, flags: 'r' | 'r+'): Promise<FileHandle> {
  try {
    return await open(path, flags);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw vhdError('FD_DISK_NOT_FOUND', `${path} does not exist`, 'check the path', err);
    if (isErrno(err, 'EISDIR'))
      throw vhdError('FD_DISK_BAD_FORMAT', `${path} is a directory, not a disk image`, undefined, err);
    if (isErrno(err, 'EACCES') || isErrno(err, 'EPERM') || isErrno(err, 'EROFS')) {
      throw vhdError(
        'FD_DISK_READ_ONLY',
        `${path} cannot be opened for ${flags === 'r' ? 'reading' : 'writing'} (${(err as NodeJS.ErrnoException).code})`,
        flags === 'r' ? 'check the file permissions' : 'make the file writable, or work on a copy',
        err,
      );
    }
    throw err;
  }
}

export async function readAt(
  fh: FileHandle,
  pos: number,
  length: number,
  what: string,
  into?: Buffer,
): Promise<Buffer> {
  const buf = into ?? Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, pos + done);
    if (bytesRead === 0) {
      throw vhdError(
        'FD_VHD_TRUNCATED',
        `file ends at byte ${pos + done} inside ${what} (expected ${length} bytes at ${pos})`,
        'the image was cut short; restore it from a backup',
      );
    }
    done += bytesRead;
  }
  return buf;
}

/** Reads into `into[intoOff..]`; used by the data path to fill one output buffer in place. */
export async function readInto(
  fh: FileHandle,
  into: Buffer,
  intoOff: number,
  length: number,
  pos: number,
  what: string,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(into, intoOff + done, length - done, pos + done);
    if (bytesRead === 0) {
      throw vhdError(
        'FD_VHD_TRUNCATED',
        `file ends at byte ${pos + done} inside ${what}`,
        'the image was cut short; run "flightdeck disk check PATH"',
      );
    }
    done += bytesRead;
  }
}

export async function writeAt(fh: FileHandle, pos: number, data: Buffer | Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, pos + done);
    done += bytesWritten;
  }
}

/** One positioned write of a batch. */
export interface Piece {
  pos: number;
  buf: Buffer;
}

/** pwritev takes at most IOV_MAX (1024 on Linux) buffers. */
const MAX_IOV = 1024;

/**
 * Writes every piece, joining pieces that are adjacent in the file into one pwritev; the
 * pwritevs run concurrently (the pieces must not overlap). Sorts `pieces` in place.
 */
export async function writeRuns(fh: FileHandle, pieces: Piece[]): Promise<void> {
  if (pieces.length === 0) return;
  if (pieces.length === 1) return writeAt(fh, pieces[0]!.pos, pieces[0]!.buf);
  pieces.sort((a, b) => a.pos - b.pos);
  const runs: Promise<void>[] = [];
  let pos = pieces[0]!.pos;
  let bufs: Buffer[] = [];
  let end = pos;
  for (const p of pieces) {
    if (p.pos !== end || bufs.length === MAX_IOV) {
      runs.push(writevAt(fh, pos, bufs));
      pos = p.pos;
      end = pos;
      bufs = [];
    }
    bufs.push(p.buf);
    end += p.buf.length;
  }
  runs.push(writevAt(fh, pos, bufs));
  await settleAll(runs);
}

/** Like Promise.all, but waits for every promise before it throws the first error: callers
 * holding a lock must not release it while some of their writes are still running. */
export async function settleAll<T>(promises: Promise<T>[]): Promise<T[]> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

async function writevAt(fh: FileHandle, pos: number, bufs: Buffer[]): Promise<void> {
  if (bufs.length === 1) return writeAt(fh, pos, bufs[0]!);
  let total = 0;
  for (const b of bufs) total += b.length;
  const done = (await fh.writev(bufs, pos)).bytesWritten;
  if (done === total) return;
  // A short pwritev (rare on a regular file): finish the rest piece by piece.
  let at = 0;
  for (const b of bufs) {
    const from = Math.max(0, done - at);
    if (from < b.length) await writeAt(fh, pos + at + from, b.subarray(from));
    at += b.length;
  }
}

export const SECTOR = 512;

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Serializes async work: the image's metadata (BAT, bitmaps, footer) has one writer at a time. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
