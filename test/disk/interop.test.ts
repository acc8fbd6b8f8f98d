/**
 * Interop with the tools that exist: images qemu-img makes read the same through our engine,
 * images we make (and write) read the same through qemu-img and open in libvhdi's vhdiinfo,
 * and QEMU writing into our images leaves something our engine and check accept.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB } from '../../src/core/units.js';
import { run } from '../../src/core/process.js';
import { convertDisk } from '../../src/disk/convert.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';
import { diskInfo } from '../../src/disk/vhd/info.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { pattern, qemuImg, qemuVirtualSize, withTempDir } from './helpers.js';

async function ourBytes(path: string): Promise<Buffer> {
  const img = await VhdImage.open(path);
  try {
    return await img.read(0, img.sizeBytes);
  } finally {
    await img.close();
  }
}

async function qemuBytes(path: string, dir: string): Promise<Buffer> {
  const out = join(dir, `q-${Math.random().toString(36).slice(2)}.raw`);
  await qemuImg('convert', '-f', 'vpc', '-O', 'raw', path, out);
  return readFile(out);
}

test('qemu-img create -f vpc (creator "qemu", CHS-sized) and force_size ("qem2"): same size, same bytes', async () => {
  await withTempDir(async (dir) => {
    for (const opts of [
      'subformat=dynamic',
      'subformat=fixed',
      'subformat=dynamic,force_size=on',
      'subformat=fixed,force_size=on',
    ]) {
      const path = join(dir, `${opts.replace(/[=,]/g, '_')}.vhd`);
      await qemuImg('create', '-f', 'vpc', '-o', opts, path, '100000000');
      await run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0x17 50M 4k', path]);
      const info = await diskInfo(path);
      assert.equal(info.virtualSize, await qemuVirtualSize(path), opts);
      assert.equal(info.creatorApp, opts.includes('force_size') ? 'qem2' : 'qemu');
      assert.ok((await ourBytes(path)).equals(await qemuBytes(path, dir)), opts);
      assert.deepEqual((await checkVhd(path)).problems, [], opts);
    }
  });
});

test('QEMU writing into an image we made: our engine reads what qemu-img reads, and check is clean', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'ours.vhd');
    await createVhd(path, { sizeBytes: 20 * MiB });
    const img = await VhdImage.open(path, { write: true });
    await img.write(3 * MiB, pattern(2 * MiB, 1));
    await img.close();
    await run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0xa5 9M 2M', '-c', 'write -P 0x3c 3584k 8k', path]);
    assert.ok((await ourBytes(path)).equals(await qemuBytes(path, dir)));
    assert.deepEqual((await checkVhd(path)).problems, []);
    // ... and we can keep writing after QEMU allocated blocks.
    const again = await VhdImage.open(path, { write: true });
    await again.write(15 * MiB, pattern(MiB, 2));
    await again.close();
    assert.ok((await ourBytes(path)).equals(await qemuBytes(path, dir)));
  });
});

test('vhdiinfo reads our dynamic, fixed and differencing images, parent identity included', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    const made = await createVhd(base, { sizeBytes: 7 * MiB + 512 });
    const fixed = join(dir, 'fixed.vhd');
    await createVhd(fixed, { sizeBytes: 7 * MiB + 512, type: 'fixed' });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const out = (p: string): Promise<string> => run('vhdiinfo', [p]).then((r) => r.stdout);
    assert.match(await out(base), /Disk type\s*:\s*Dynamic/);
    assert.match(await out(base), /\(7340544 bytes\)/);
    assert.match(await out(fixed), /Disk type\s*:\s*Fixed/);
    const c = await out(child);
    assert.match(c, /Disk type\s*:\s*Differential/);
    assert.match(c, new RegExp(`Parent identifier\\s*:\\s*${made.uuid}`));
    assert.match(c, /Parent filename\s*:\s*base\.vhd/);
  });
});

test('convert raw -> vhd / vhd-fixed: qemu-img compare passes and sizes are exact', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    const data = Buffer.alloc(10_000_384);
    pattern(777_216, 5).copy(data, 1_000_000);
    await writeFile(raw, data);
    for (const to of ['vhd', 'vhd-fixed'] as const) {
      const out = join(dir, `${to}.vhd`);
      await convertDisk(raw, out, { to });
      assert.equal(await qemuVirtualSize(out), data.length, to);
      await qemuImg('compare', '-f', 'raw', '-F', 'vpc', raw, out);
    }
  });
});
