/**
 * Positioned reads and writes that never return short: a short read means the file ends before
 * the structure we expected, which is the stable FD_VHD_TRUNCATED error, not a silent zero fill.
 */
import type { FileHandle } from 'node:fs/promises';
import { vhdError } from './errors.js';

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
