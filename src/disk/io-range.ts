/** The checks every BlockDevice makes before I/O: in range, still open, writable. */
import { vhdError } from './vhd/errors.js';

export interface IoTarget {
  readonly path: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
}

export function checkRange(dev: IoTarget, closed: boolean, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > dev.sizeBytes
  ) {
    throw vhdError('FD_DISK_OUT_OF_RANGE', `I/O at ${offset}+${length} is outside the disk (${dev.sizeBytes} bytes)`);
  }
  if (closed) throw new Error(`${dev.path} is closed`);
}

export function checkWritable(dev: IoTarget): void {
  if (dev.readOnly) throw vhdError('FD_DISK_READ_ONLY', `${dev.path} is open read-only`);
}
