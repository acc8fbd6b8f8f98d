import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isFdError } from '../../core/errors.js';
import { run } from '../../core/process.js';
import { ovfFixture, withTempDir } from '../../../test/ovf/helpers.js';
import { rawFileSink } from './sinks.js';
import { streamVmdkToSink } from './stream-reader.js';
import { streamVmdkToVhd } from './to-vhd.js';

const MiB = 2 ** 20;

/** A raw image with data in a few places, including the disk's last (partial) grain. */
async function sampleRaw(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    await fh.write(randomBytes(3 * MiB), 0, 3 * MiB, 5 * MiB);
    await fh.write(Buffer.from('hello'), 0, 5, 17 * MiB + 123);
    await fh.write(randomBytes(512), 0, 512, sizeBytes - 512);
  } finally {
    await fh.close();
  }
}

async function convert(vmdk: string, raw: string) {
  const sink = rawFileSink(raw);
  try {
    return await streamVmdkToSink(createReadStream(vmdk), sink, { source: vmdk });
  } finally {
    await sink.close();
  }
}

const code = (c: string) => (e: unknown) => isFdError(e, c as `FD_${string}`);

for (const [fixture, size] of [
  ['cot/input.vmdk', 1024 * MiB],
  ['cot/ubuntu.2.0-disk1.vmdk', 8192 * MiB],
] as const) {
  test(`${fixture} (real streamOptimized export) converts to what qemu-img reads`, async () => {
    await withTempDir(async (dir) => {
      const raw = join(dir, 'out.raw');
      const res = await convert(ovfFixture(fixture), raw);
      assert.equal(res.sizeBytes, size);
      assert.equal(res.descriptor.createType, 'streamOptimized');
      assert.equal(res.readBytes, (await stat(ovfFixture(fixture))).size, 'read to the end-of-stream marker');
      assert.equal(res.writtenBytes, 0, 'an empty disk writes nothing');
      const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', ovfFixture(fixture), raw], {
        allowFail: true,
      });
      assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
      // And into a dynamic VHD from our engine: same size, same (empty) contents, tiny file.
      const vhd = join(dir, 'out.vhd');
      const res2 = await streamVmdkToVhd(createReadStream(ovfFixture(fixture)), vhd);
      assert.equal(res2.vhdSizeBytes, size);
      const cmp2 = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'vpc', ovfFixture(fixture), vhd], {
        allowFail: true,
      });
      assert.equal(cmp2.code, 0, cmp2.stdout + cmp2.stderr);
      assert.ok((await stat(vhd)).size < 2 * MiB, 'no blocks allocated for an empty disk');
    });
  });
}

test('a qemu-img streamOptimized VMDK with data converts byte-identical, writing only non-zero data', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    const size = 40 * MiB + 3 * 512; // last grain is partial
    await sampleRaw(src, size);
    const vmdk = join(dir, 'q.vmdk');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, vmdk]);
    const out = join(dir, 'out.raw');
    const res = await convert(vmdk, out);
    assert.equal(res.sizeBytes, size);
    assert.ok(res.grains >= 48, `${res.grains} grains`);
    // 3 MiB of random data, one 4 KiB block around "hello", one 4 KiB block at the end.
    assert.equal(res.writtenBytes, 3 * MiB + 4096 + ((size - 512) % 4096) + 512);
    assert.deepEqual(await readFile(out), await readFile(src));
    const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'raw', vmdk, out], { allowFail: true });
    assert.equal(cmp.code, 0, cmp.stdout);
  });
});

test('damaged streams are refused with a code: truncated, corrupt grain, bad LBA, wrong kind', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    await sampleRaw(src, 16 * MiB);
    const vmdk = join(dir, 'q.vmdk');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, vmdk]);
    const good = await readFile(vmdk);
    const variant = async (name: string, buf: Buffer): Promise<string> => {
      const p = join(dir, name);
      await writeFile(p, buf);
      return p;
    };
    const out = join(dir, 'out.raw');
    await assert.rejects(
      convert(await variant('cut.vmdk', good.subarray(0, good.length >> 1)), out),
      code('FD_VMDK_TRUNCATED'),
    );

    // The first grain marker sits at overHead (sector 128 for qemu-img); damage its data.
    const first = good.readBigUInt64LE(64) * 512n;
    const corrupt = Buffer.from(good);
    corrupt.fill(0xff, Number(first) + 12, Number(first) + 40);
    await assert.rejects(convert(await variant('corrupt.vmdk', corrupt), out), code('FD_VMDK_BAD_GRAIN'));

    const farLba = Buffer.from(good);
    farLba.writeBigUInt64LE(1n << 40n, Number(first));
    await assert.rejects(convert(await variant('lba.vmdk', farLba), out), code('FD_VMDK_BAD_GRAIN'));

    await assert.rejects(convert(ovfFixture('pve-storage/disk1.vmdk'), out), code('FD_VMDK_NOT_STREAM_OPTIMIZED'));
    await assert.rejects(convert(ovfFixture('cot/input.iso'), out), code('FD_VMDK_BAD_MAGIC'));
  });
});

test('converted into a dynamic VHD from our engine, the disk compares equal to qemu-img reading the VMDK', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    await sampleRaw(src, 24 * MiB);
    const vmdk = join(dir, 'q.vmdk');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, vmdk]);
    const vhd = join(dir, 'out.vhd');
    await streamVmdkToVhd(createReadStream(vmdk), vhd, { source: vmdk });
    const cmp = await run('qemu-img', ['compare', '-f', 'vmdk', '-F', 'vpc', vmdk, vhd], { allowFail: true });
    assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
    // Dynamic: only the blocks holding the 3 MiB run, "hello" and the last sector are allocated.
    assert.ok((await stat(vhd)).size < 12 * MiB, `${(await stat(vhd)).size} bytes`);

    // A broken stream leaves no VHD behind, not even a temp file.
    const bad = join(dir, 'bad.vmdk');
    await writeFile(bad, (await readFile(vmdk)).subarray(0, 200_000));
    await assert.rejects(streamVmdkToVhd(createReadStream(bad), join(dir, 'bad.vhd')), code('FD_VMDK_TRUNCATED'));
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual(
      (await readdir(dir)).filter((n) => (n.includes('bad') && n.endsWith('vhd')) || n.endsWith('.tmp')),
      [],
    );
  });
});
