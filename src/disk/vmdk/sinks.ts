/**
 * Ready-made sinks for streamVmdkToSink: a sparse raw file, and any BlockDevice (a VHD from
 * the VHD engine, a vdisk export). Sinks receive only non-zero data, so a raw file stays sparse
 * and a dynamic VHD allocates only blocks that hold data.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BlockDevice } from '../block-device.js';
import type { VmdkSink } from './stream-reader.js';

/** Writes into a raw image at `path` (created or truncated to the disk's size). Call close(). */
export function rawFileSink(path: string): VmdkSink & { close(): Promise<void> } {
  let fh: FileHandle | undefined;
  return {
    async begin({ sizeBytes }) {
      fh = await open(path, 'w');
      await fh.truncate(sizeBytes);
    },
    async write(offset, data) {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh!.write(data, done, data.length - done, offset + done);
        done += bytesWritten;
      }
    },
    async close() {
      if (fh) {
        await fh.sync();
        await fh.close();
      }
      fh = undefined;
    },
  };
}

/** Writes into an open BlockDevice; `create` may make it once the virtual size is known. */
export function blockDeviceSink(create: (sizeBytes: number) => Promise<BlockDevice>): VmdkSink & {
  device(): BlockDevice | undefined;
} {
  let dev: BlockDevice | undefined;
  return {
    async begin({ sizeBytes }) {
      dev = await create(sizeBytes);
    },
    async write(offset, data) {
      await dev!.write(offset, data);
    },
    device: () => dev,
  };
}
