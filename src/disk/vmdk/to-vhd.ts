/**
 * streamOptimized VMDK -> dynamic VHD from our VHD engine, in one pass over the input (an OVA
 * member arrives exactly once). The VHD is built under a temp name, without per-block syncs
 * (nobody can see it yet), then flushed, fsynced and renamed: a failed import leaves nothing.
 */
import { rename, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fsyncDir, tempPathFor } from '../../core/atomic-file.js';
import { createVhd } from '../vhd/create.js';
import { VhdImage } from '../vhd/image.js';
import type { ByteSource } from './byte-reader.js';
import { streamVmdkToSink, type StreamVmdkOptions, type StreamVmdkResult } from './stream-reader.js';

export async function streamVmdkToVhd(
  input: ByteSource,
  path: string,
  opts: StreamVmdkOptions & { blockSizeBytes?: number } = {},
): Promise<StreamVmdkResult & { path: string }> {
  const abs = resolve(path);
  const tmp = tempPathFor(abs);
  let img: VhdImage | undefined;
  try {
    const res = await streamVmdkToSink(
      input,
      {
        async begin({ sizeBytes }) {
          await createVhd(tmp, {
            sizeBytes,
            type: 'dynamic',
            ...(opts.blockSizeBytes ? { blockSizeBytes: opts.blockSizeBytes } : {}),
          });
          img = await VhdImage.open(tmp, { write: true, unsafeNoSync: true });
        },
        write: (offset, data) => img!.write(offset, data),
      },
      opts,
    );
    await img!.flush();
    await img!.close();
    img = undefined;
    await rename(tmp, abs);
    await fsyncDir(dirname(abs));
    return { ...res, path: abs };
  } catch (err) {
    if (img) await img.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}
