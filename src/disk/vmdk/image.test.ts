import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { isFdError } from '../../core/errors.js';
import { run } from '../../core/process.js';
import { ovfFixture, withTempDir } from '../../../test/ovf/helpers.js';
import { streamOptimizedDescriptor } from './descriptor.js';
import {
  COMPRESSION_DEFLATE,
  FLAG_COMPRESSED,
  FLAG_MARKERS,
  FLAG_VALID_NEWLINE,
  serializeSparseHeader,
} from './header.js';
import { VmdkImage } from './image.js';
import { MARKER_EOS, metadataMarker } from './markers.js';
import { openRawSource, writeStreamOptimizedVmdk } from './stream-writer.js';
import { streamVmdkToVhd } from './to-vhd.js';

const MiB = 2 ** 20;

/** Reads the whole image through the BlockDevice interface, in odd-sized pieces. */
async function readAll(img: VmdkImage): Promise<Buffer> {
  const parts: Buffer[] = [];
  const step = 3 * MiB + 4096 + 512;
  for (let o = 0; o < img.sizeBytes; o += step) parts.push(await img.read(o, Math.min(step, img.sizeBytes - o)));
  return Buffer.concat(parts);
}

async function qemuRaw(vmdk: string, out: string): Promise<Buffer> {
  await run('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', vmdk, out]);
  return readFile(out);
}

test('random reads through the grain directory match qemu-img for every sparse VMDK kind we meet', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    const fh = await open(src, 'w');
    await fh.truncate(20 * MiB + 512);
    await fh.write(randomBytes(3 * MiB), 0, 3 * MiB, MiB + 777);
    await fh.close();
    const qemuStream = join(dir, 'qs.vmdk');
    await run('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, qemuStream]);
    const qemuSparse = join(dir, 'qm.vmdk');
    await run('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=monolithicSparse', src, qemuSparse]);
    const ours = join(dir, 'ours.vmdk');
    const s = await openRawSource(src);
    await writeStreamOptimizedVmdk(s, ours).finally(() => s.close());
    for (const vmdk of [
      qemuStream,
      qemuSparse,
      ours,
      ovfFixture('cot/input.vmdk'), // GD offset in the header
      ovfFixture('cot/ubuntu.2.0-disk1.vmdk'), // VirtualBox, GD_AT_END
      ovfFixture('pve-storage/disk1.vmdk'), // monolithicSparse v1
    ]) {
      const img = await VmdkImage.open(vmdk);
      try {
        if (img.sizeBytes > 64 * MiB) {
          // The big empty fixtures: the map says hole everywhere and a read says zeros.
          assert.deepEqual(await img.blockStatus(0, img.sizeBytes), [
            { offset: 0, length: img.sizeBytes, hole: true, zero: true },
          ]);
          assert.ok((await img.read(img.sizeBytes - MiB, MiB)).equals(Buffer.alloc(MiB)));
        } else {
          assert.ok((await readAll(img)).equals(await qemuRaw(vmdk, join(dir, 'q.raw'))), vmdk);
        }
      } finally {
        await img.close();
      }
    }
  });
});

test('a VmdkImage is a DiskSource: VMDK -> our streamOptimized VMDK keeps the data and skips holes', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    const fh = await open(src, 'w');
    await fh.truncate(40 * MiB);
    await fh.write(randomBytes(MiB), 0, MiB, 30 * MiB);
    await fh.close();
    const a = join(dir, 'a.vmdk');
    await run('qemu-img', ['convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, a]);
    const img = await VmdkImage.open(a);
    const b = join(dir, 'b.vmdk');
    const res = await writeStreamOptimizedVmdk(img, b).finally(() => img.close());
    assert.equal(res.grains, 16);
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, b], { allowFail: true });
    assert.equal(cmp.code, 0, cmp.stdout);
    await assert.rejects(
      VmdkImage.open(a).then(async (i) => {
        try {
          await i.write();
        } finally {
          await i.close();
        }
      }),
      (e) => isFdError(e, 'FD_VMDK_READ_ONLY'),
    );
  });
});

/** A streamOptimized stream with grains in the order given (no grain tables: streams need none). */
function handMadeStream(capacityBytes: number, grains: [number, Buffer][]): Buffer {
  const header = serializeSparseHeader({
    version: 3,
    flags: FLAG_VALID_NEWLINE | FLAG_COMPRESSED | FLAG_MARKERS,
    capacitySectors: capacityBytes / 512,
    grainSectors: 128,
    descriptorOffsetSectors: 1,
    descriptorSizeSectors: 20,
    gtesPerGt: 512,
    rgdOffsetSectors: 0,
    gdOffsetSectors: undefined,
    overheadSectors: 128,
    compressAlgorithm: COMPRESSION_DEFLATE,
  });
  const lead = Buffer.alloc(128 * 512);
  header.copy(lead);
  Buffer.from(streamOptimizedDescriptor(capacityBytes / 512, 'x.vmdk')).copy(lead, 512);
  const parts: Buffer[] = [lead];
  for (const [offset, data] of grains) {
    const z = deflateSync(data);
    const rec = Buffer.alloc(Math.ceil((12 + z.length) / 512) * 512);
    rec.writeBigUInt64LE(BigInt(offset / 512), 0);
    rec.writeUInt32LE(z.length, 8);
    z.copy(rec, 12);
    parts.push(rec);
  }
  parts.push(metadataMarker(MARKER_EOS, 0));
  return Buffer.concat(parts);
}

test('grains arriving out of order still land right in the VHD (random-access fallback)', async () => {
  await withTempDir(async (dir) => {
    const size = 8 * MiB;
    const g = (seed: number): Buffer => Buffer.alloc(65536, seed);
    const grains: [number, Buffer][] = [
      [6 * MiB, g(1)],
      [64 * 1024, g(2)],
      [3 * MiB, g(3)],
      [0, g(4)],
    ];
    const stream = handMadeStream(size, grains);
    const raw = Buffer.alloc(size);
    for (const [o, d] of grains) d.copy(raw, o);
    await writeFile(join(dir, 'expect.raw'), raw);
    const ordered = handMadeStream(
      size,
      [...grains].sort((a, b) => a[0] - b[0]),
    );
    for (const [name, buf, sequential] of [
      ['shuffled', stream, false],
      ['ordered', ordered, true],
    ] as const) {
      await writeFile(join(dir, `${name}.vmdk`), buf);
      const vhd = join(dir, `${name}.vhd`);
      const res = await streamVmdkToVhd(createReadStream(join(dir, `${name}.vmdk`)), vhd);
      assert.equal(res.sequential, sequential, name);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', join(dir, 'expect.raw'), vhd], {
        allowFail: true,
      });
      assert.equal(cmp.code, 0, `${name}: ${cmp.stdout}`);
    }
  });
});
