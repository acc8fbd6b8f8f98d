/**
 * Converts a streamOptimized VMDK while it is read, front to back, without seeking: the way an
 * OVA member arrives. Every grain marker carries its own LBA, so the grain directory at the
 * end is not needed. Grains are inflated in batches on worker threads (the host's other
 * cores) and only non-zero data goes to the sink, in stream order; the sink may be a dynamic
 * VHD, a raw file or anything that takes positioned writes.
 */
import { FdError } from '../../core/errors.js';
import { ByteReader, type ByteSource } from './byte-reader.js';
import { InflatePool } from './inflate-pool.js';
import { parseDescriptor, type VmdkDescriptor } from './descriptor.js';
import { COMPRESSION_DEFLATE, SECTOR, isStreamOptimized, parseSparseHeader, type SparseHeader } from './header.js';
import { GRAIN_MARKER_BYTES, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT } from './markers.js';

export interface VmdkSink {
  /** Called once, before any write, with the virtual size; a sink may create its image here. */
  begin?(info: { sizeBytes: number; header: SparseHeader; descriptor: VmdkDescriptor }): Promise<void>;
  write(offsetBytes: number, data: Buffer): Promise<void>;
}

export interface StreamVmdkOptions {
  /** Name for messages (the member or file name). */
  source?: string;
  /** Inflate worker threads; 0 inflates on the calling thread. Default: one per spare core. */
  workers?: number;
  /** Zero runs shorter than this inside a grain are written, not skipped (keeps writes large). */
  zeroGranularityBytes?: number;
  onProgress?(readBytes: number): void;
  signal?: AbortSignal;
}

export interface StreamVmdkResult {
  sizeBytes: number;
  grains: number;
  /** Bytes handed to the sink (non-zero data only). */
  writtenBytes: number;
  readBytes: number;
  descriptor: VmdkDescriptor;
}

/** Reads a whole streamOptimized VMDK from `input` and writes its non-zero data to `sink`. */
export async function streamVmdkToSink(
  input: ByteSource,
  sink: VmdkSink,
  opts: StreamVmdkOptions = {},
): Promise<StreamVmdkResult> {
  const source = opts.source ?? 'VMDK stream';
  const r = new ByteReader(input);
  try {
    return await convert(r, sink, opts, source);
  } finally {
    await r.close();
  }
}

/**
 * Grains per batch sent to an inflate worker. Big batches mean few thread handoffs, which is
 * what costs on a busy host (each wakeup may wait a scheduler slice), not the copying.
 */
const BATCH_GRAINS = 256;
const BATCH_BYTES = 4 << 20;

function truncated(source: string, what: string): FdError {
  return new FdError('FD_VMDK_TRUNCATED', `${source} ends inside ${what}`, {
    hint: 'the file is incomplete: download or copy it again',
  });
}

async function convert(
  r: ByteReader,
  sink: VmdkSink,
  opts: StreamVmdkOptions,
  source: string,
): Promise<StreamVmdkResult> {
  const headBuf = await r.read(SECTOR);
  if (headBuf.length < SECTOR) {
    if (headBuf.length >= 4 && headBuf.readUInt32LE(0) === 0x564d444b) throw truncated(source, 'the header');
    throw new FdError('FD_VMDK_BAD_MAGIC', `${source} is not a sparse VMDK (${headBuf.length} bytes)`);
  }
  const header = parseSparseHeader(headBuf, source);
  if (!isStreamOptimized(header)) {
    throw new FdError(
      'FD_VMDK_NOT_STREAM_OPTIMIZED',
      `${source} is a sparse VMDK but not streamOptimized (flags 0x${header.flags.toString(16)})`,
      {
        hint: 'monolithicSparse VMDKs are converted with qemu-img, not streamed',
      },
    );
  }
  if (header.compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw new FdError(
      'FD_VMDK_BAD_HEADER',
      `${source}: compression algorithm ${header.compressAlgorithm} is not deflate`,
    );
  }
  const sizeBytes = header.capacitySectors * SECTOR;
  const grainBytes = header.grainSectors * SECTOR;

  // Descriptor, then skip to the first marker at overHead.
  let descriptor: VmdkDescriptor = { extents: [], ddb: {} };
  if (header.descriptorOffsetSectors > 0 && header.descriptorSizeSectors > 0) {
    if (header.descriptorOffsetSectors * SECTOR < r.position)
      throw new FdError('FD_VMDK_BAD_HEADER', `${source}: descriptor overlaps the header`);
    await r.skip(header.descriptorOffsetSectors * SECTOR - r.position);
    const text = await r.read(Math.min(header.descriptorSizeSectors * SECTOR, 1 << 20));
    descriptor = parseDescriptor(text.toString('utf8'));
    if (descriptor.createType && descriptor.createType !== 'streamOptimized') {
      throw new FdError(
        'FD_VMDK_NOT_STREAM_OPTIMIZED',
        `${source}: descriptor says createType="${descriptor.createType}"`,
      );
    }
  }
  const start = header.overheadSectors * SECTOR;
  if (start < r.position)
    throw new FdError('FD_VMDK_BAD_HEADER', `${source}: overHead ${header.overheadSectors} lies inside the descriptor`);
  const lead = start - r.position;
  if ((await r.skip(lead)) < lead) throw truncated(source, 'the metadata before the first grain');

  await sink.begin?.({ sizeBytes, header, descriptor });

  const granularity = opts.zeroGranularityBytes ?? 4096;
  // Grains go to the inflater in batches; results are written in batch order, so the sink sees
  // the stream's order. A few batches stay in flight so reading never waits for inflating.
  const pool = new InflatePool(grainBytes + 1024, opts.workers);
  const maxInFlight = Math.max(2, 2 * (opts.workers ?? 2));
  const inFlight: { lbas: number[]; done: Promise<(Buffer | null)[]> }[] = [];
  let batch: { lbas: number[]; data: Buffer[]; bytes: number } = { lbas: [], data: [], bytes: 0 };
  let grains = 0;
  let writtenBytes = 0;

  const dispatch = (): void => {
    if (batch.lbas.length === 0) return;
    const done = pool.inflate(batch.data);
    done.catch(() => undefined); // awaited in order by settleOne(); this only marks it handled
    inFlight.push({ lbas: batch.lbas, done });
    batch = { lbas: [], data: [], bytes: 0 };
  };

  const settleOne = async (): Promise<void> => {
    const { lbas, done } = inFlight.shift()!;
    const out = await done;
    for (const [i, lba] of lbas.entries()) {
      const data = out[i];
      if (!data) {
        throw new FdError('FD_VMDK_BAD_GRAIN', `${source}: grain at sector ${lba} does not inflate`, {
          hint: 'the file is corrupt',
        });
      }
      if (data.length > grainBytes) {
        throw new FdError(
          'FD_VMDK_BAD_GRAIN',
          `${source}: grain at sector ${lba} inflates to ${data.length} bytes, more than a grain`,
        );
      }
      const offset = lba * SECTOR;
      const usable = data.subarray(0, Math.min(data.length, sizeBytes - offset));
      for (const [s, e] of nonZeroRuns(usable, granularity)) {
        await sink.write(offset + s, usable.subarray(s, e));
        writtenBytes += e - s;
      }
    }
  };

  try {
    for (;;) {
      if (opts.signal?.aborted) throw new FdError('FD_CANCELLED', `conversion of ${source} was cancelled`);
      // Markers start on sector boundaries.
      const pad = (SECTOR - (r.position % SECTOR)) % SECTOR;
      if (pad && (await r.skip(pad)) < pad) throw truncated(source, 'padding after a grain');
      const m = await r.read(GRAIN_MARKER_BYTES);
      // qemu-img ends small streams (grain directory in the header, not GD_AT_END) without an
      // end-of-stream marker; only a stream that promised its directory at the end must have one.
      if (m.length === 0 && header.gdOffsetSectors !== undefined) break;
      if (m.length === 0) {
        throw new FdError('FD_VMDK_TRUNCATED', `${source} ends without an end-of-stream marker`, {
          hint: 'the file is incomplete: download or copy it again',
        });
      }
      if (m.length < GRAIN_MARKER_BYTES) throw truncated(source, 'a marker');
      const value = Number(m.readBigUInt64LE(0));
      const size = m.readUInt32LE(8);
      if (size > 0) {
        if (value >= header.capacitySectors || value % header.grainSectors !== 0) {
          throw new FdError(
            'FD_VMDK_BAD_GRAIN',
            `${source}: grain marker at byte ${r.position - 12} names sector ${value}, outside the ${header.capacitySectors}-sector disk or not grain-aligned`,
          );
        }
        if (size > grainBytes * 2 + 1024) {
          throw new FdError('FD_VMDK_BAD_GRAIN', `${source}: grain at sector ${value} claims ${size} compressed bytes`);
        }
        const data = await r.read(size);
        if (data.length < size) throw truncated(source, `the grain for sector ${value}`);
        grains++;
        batch.lbas.push(value);
        batch.data.push(data);
        batch.bytes += data.length;
        if (batch.lbas.length >= BATCH_GRAINS || batch.bytes >= BATCH_BYTES) {
          dispatch();
          while (inFlight.length > maxInFlight) await settleOne();
        }
        opts.onProgress?.(r.position);
        continue;
      }
      const rest = await r.read(SECTOR - GRAIN_MARKER_BYTES);
      if (rest.length < SECTOR - GRAIN_MARKER_BYTES) throw truncated(source, 'a metadata marker');
      const type = rest.readUInt32LE(0);
      if (type === MARKER_EOS) break;
      if (type !== MARKER_GT && type !== MARKER_GD && type !== MARKER_FOOTER) {
        throw new FdError(
          'FD_VMDK_BAD_MARKER',
          `${source}: unknown marker type ${type} at byte ${r.position - SECTOR}`,
        );
      }
      // Grain tables, the directory and the footer describe what we already saw: skip them.
      if ((await r.skip(value * SECTOR)) < value * SECTOR) throw truncated(source, 'grain-table metadata');
    }
    dispatch();
    while (inFlight.length > 0) await settleOne();
  } catch (err) {
    await Promise.allSettled(inFlight.map((j) => j.done));
    throw err;
  } finally {
    await pool.close();
  }
  return { sizeBytes, grains, writtenBytes, readBytes: r.position, descriptor };
}

/** [start, end) byte ranges that hold non-zero data, at `granularity` resolution. */
export function nonZeroRuns(buf: Buffer, granularity: number): [number, number][] {
  const runs: [number, number][] = [];
  let runStart = -1;
  for (let off = 0; off < buf.length; off += granularity) {
    const end = Math.min(off + granularity, buf.length);
    const zero = isZero(buf, off, end);
    if (!zero && runStart < 0) runStart = off;
    if (zero && runStart >= 0) {
      runs.push([runStart, off]);
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push([runStart, buf.length]);
  return runs;
}

const ZERO_PAGE = Buffer.alloc(65536);

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let off = start; off < end; off += ZERO_PAGE.length) {
    const len = Math.min(ZERO_PAGE.length, end - off);
    if (buf.compare(ZERO_PAGE, 0, len, off, off + len) !== 0) return false;
  }
  return true;
}
