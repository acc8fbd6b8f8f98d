import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { open, readFile, readdir } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { run } from '../../core/process.js';
import { withTempDir } from '../../../test/ovf/helpers.js';
import { rawFileSink } from './sinks.js';
import { streamVmdkToSink } from './stream-reader.js';
import { openRawSource, writeStreamOptimizedVmdk } from './stream-writer.js';

const MiB = 2 ** 20;

async function sampleRaw(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    await fh.write(randomBytes(2 * MiB), 0, 2 * MiB, 1 * MiB);
    // Compressible data across a grain-table boundary (512 grains = 32 MiB).
    await fh.write(Buffer.alloc(MiB, 'flightdeck '), 0, MiB, 32 * MiB - 512 * 1024);
    await fh.write(randomBytes(700), 0, 700, sizeBytes - 700);
  } finally {
    await fh.close();
  }
}

test('our streamOptimized VMDK passes qemu-img check and compares equal to its source', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src.raw');
    const size = 48 * MiB + 1536;
    await sampleRaw(src, size);
    const vmdk = join(dir, 'out.vmdk');
    const source = await openRawSource(src);
    const res = await writeStreamOptimizedVmdk(source, vmdk).finally(() => source.close());
    assert.equal(res.capacityBytes, size);
    assert.equal(
      res.sha256,
      createHash('sha256')
        .update(await readFile(vmdk))
        .digest('hex'),
    );
    const check = await run('qemu-img', ['check', '-f', 'vmdk', vmdk], { allowFail: true });
    assert.equal(check.code, 0, check.stdout + check.stderr);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', vmdk])).stdout) as {
      'virtual-size': number;
      'format-specific': { data: { 'create-type': string } };
    };
    assert.equal(info['virtual-size'], size);
    assert.equal(info['format-specific'].data['create-type'], 'streamOptimized');
    const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, vmdk], { allowFail: true });
    assert.equal(cmp.code, 0, cmp.stdout);

    // And back: qemu-img's conversion and ours both give the original bytes.
    const back = join(dir, 'back.raw');
    await run('qemu-img', ['convert', '-f', 'vmdk', '-O', 'raw', vmdk, back]);
    assert.deepEqual(await readFile(back), await readFile(src));
    const ours = join(dir, 'ours.raw');
    const sink = rawFileSink(ours);
    await streamVmdkToSink(createReadStream(vmdk), sink).finally(() => sink.close());
    assert.deepEqual(await readFile(ours), await readFile(src));
  });
});

test('an all-zero disk becomes a small VMDK with no grains that qemu-img accepts', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'zero.raw');
    const fh = await open(src, 'w');
    await fh.truncate(64 * MiB);
    await fh.close();
    const vmdk = join(dir, 'zero.vmdk');
    const source = await openRawSource(src);
    const res = await writeStreamOptimizedVmdk(source, vmdk).finally(() => source.close());
    assert.equal(res.grains, 0);
    assert.ok(res.fileSizeBytes < 128 * 1024, `${res.fileSizeBytes} bytes`);
    assert.equal((await run('qemu-img', ['check', vmdk], { allowFail: true })).code, 0);
    assert.equal(
      (await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', src, vmdk], { allowFail: true })).code,
      0,
    );
    // Nothing but the result is left in the directory (the temp file was renamed).
    assert.deepEqual((await readdir(dir)).sort(), ['zero.raw', 'zero.vmdk']);
  });
});
