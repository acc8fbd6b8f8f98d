import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import { MiB } from '../../core/units.js';
import { fixture, pattern, qemuImg, withTempDir } from '../../../test/disk/helpers.js';
import { createDifferencingVhd, createVhd } from './create.js';
import { VhdImage } from './image.js';

async function readAll(img: VhdImage): Promise<Buffer> {
  return img.read(0, img.sizeBytes);
}

test('fixtures open at the size their creator app implies (QEMU 7.2 rule)', async () => {
  const cases: Array<[string, number, string]> = [
    ['vhd_fixed_small.vhd', 3 * MiB, 'fixed'],
    ['vhd_dynamic_small.vhd', 3 * MiB, 'dynamic'],
    ['du.vhd', 3133440, 'dynamic'], // creator "dutl": CHS 90/4/17, not the 3 MiB current size
    ['ext2.vhd', 4212736, 'dynamic'],
  ];
  for (const [name, size, type] of cases) {
    const img = await VhdImage.open(fixture(name));
    try {
      assert.equal(img.sizeBytes, size, name);
      assert.equal(img.diskType, type, name);
    } finally {
      await img.close();
    }
  }
});

test('fixtures read byte-identical to qemu-img convert to raw', async () => {
  await withTempDir(async (dir) => {
    for (const name of ['vhd_fixed_small.vhd', 'vhd_dynamic_small.vhd', 'du.vhd', 'ext2.vhd']) {
      const raw = join(dir, `${name}.raw`);
      await qemuImg('convert', '-f', 'vpc', '-O', 'raw', fixture(name), raw);
      const img = await VhdImage.open(fixture(name));
      try {
        assert.ok((await readAll(img)).equals(await readFile(raw)), name);
      } finally {
        await img.close();
      }
    }
  });
});

test('ext2.vhd holds an ext2 superblock at byte 1024+56', async () => {
  const img = await VhdImage.open(fixture('ext2.vhd'));
  try {
    const sb = await img.read(1024, 1024);
    assert.equal(sb.readUInt16LE(56), 0xef53);
  } finally {
    await img.close();
  }
});

test('image.vhd (bad footer checksum) is refused with FD_VHD_BAD_CHECKSUM', async () => {
  await assert.rejects(VhdImage.open(fixture('image.vhd')), (e) => isFdError(e, 'FD_VHD_BAD_CHECKSUM'));
});

test('qemu-img dynamic and fixed images read byte-identical through our engine', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    const data = Buffer.alloc(5 * MiB);
    pattern(300 * 1024, 1).copy(data, 4096);
    pattern(MiB, 2).copy(data, 3 * MiB + 512);
    await writeFile(raw, data);
    for (const sub of ['dynamic', 'fixed']) {
      const vhd = join(dir, `${sub}.vhd`);
      await qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${sub}`, raw, vhd);
      const back = join(dir, `${sub}.back.raw`);
      await qemuImg('convert', '-f', 'vpc', '-O', 'raw', vhd, back);
      const img = await VhdImage.open(vhd);
      try {
        assert.ok((await readAll(img)).equals(await readFile(back)), sub);
        assert.ok((await img.read(0, data.length)).equals(data), `${sub} holds the source bytes`);
      } finally {
        await img.close();
      }
    }
  });
});

test('writes read back, across block edges and unaligned, and qemu-img sees them', async () => {
  await withTempDir(async (dir) => {
    for (const type of ['dynamic', 'fixed'] as const) {
      const path = join(dir, `${type}.vhd`);
      await createVhd(path, { sizeBytes: 9 * MiB, type });
      const expect = Buffer.alloc(9 * MiB);
      const img = await VhdImage.open(path, { write: true });
      const writes: Array<[number, number, number]> = [
        [0, 4096, 1],
        [2 * MiB - 1000, 3000, 2],
        [5 * MiB + 7, 100, 3],
        [9 * MiB - 512, 512, 4],
      ];
      for (const [off, len, seed] of writes) {
        const d = pattern(len, seed);
        await img.write(off, d);
        d.copy(expect, off);
      }
      await img.flush();
      assert.ok((await readAll(img)).equals(expect), type);
      await img.close();
      const reopened = await VhdImage.open(path);
      assert.ok((await readAll(reopened)).equals(expect), `${type} after reopen`);
      await reopened.close();
      const raw = join(dir, `${type}.raw`);
      await qemuImg('convert', '-f', 'vpc', '-O', 'raw', path, raw);
      assert.ok((await readFile(raw)).equals(expect), `${type} through qemu-img`);
    }
  });
});

test('differencing read takes unset-bitmap sectors from the parent', async () => {
  await withTempDir(async (dir) => {
    const parentPath = join(dir, 'base.vhd');
    await createVhd(parentPath, { sizeBytes: 4 * MiB });
    const parent = await VhdImage.open(parentPath, { write: true });
    const base = pattern(4 * MiB, 7);
    await parent.write(0, base);
    await parent.close();
    const childPath = join(dir, 'child.vhd');
    await createDifferencingVhd(childPath, parentPath);
    const child = await VhdImage.open(childPath, { write: true });
    const written = pattern(512, 9);
    await child.write(512 * 3, written);
    assert.deepEqual(await child.read(512 * 3, 512), written);
    assert.deepEqual(await child.read(512 * 2, 512), base.subarray(1024, 1536));
    assert.deepEqual(await child.read(512 * 4, 512), base.subarray(2048, 2560));
    const ext = await child.blockStatus(0, 4 * MiB);
    assert.ok(
      ext.every((e) => !e.hole),
      'parent data shows as allocated',
    );
    await child.close();
    const again = await VhdImage.open(childPath);
    const expect = Buffer.from(base);
    written.copy(expect, 512 * 3);
    assert.ok((await readAll(again)).equals(expect));
    assert.deepEqual(again.chainPaths, [childPath, parentPath]);
    await again.close();
  });
});

test('a missing parent names the paths tried', async () => {
  await withTempDir(async (dir) => {
    const parentPath = join(dir, 'base.vhd');
    await createVhd(parentPath, { sizeBytes: MiB });
    await createDifferencingVhd(join(dir, 'child.vhd'), parentPath);
    await import('node:fs/promises').then((fs) => fs.rename(parentPath, join(dir, 'moved.vhd')));
    await assert.rejects(
      VhdImage.open(join(dir, 'child.vhd')),
      (e) => isFdError(e, 'FD_VHD_PARENT_NOT_FOUND') && e.message.includes(parentPath),
    );
  });
});

test('blockStatus reports holes in a dynamic disk and data where written', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'd.vhd');
    await createVhd(path, { sizeBytes: 8 * MiB });
    const img = await VhdImage.open(path, { write: true });
    await img.write(2 * MiB + 4096, pattern(4096, 1));
    const ext = await img.blockStatus(0, 8 * MiB);
    assert.deepEqual(
      ext.map((e) => [e.offset, e.length, e.hole]),
      [
        [0, 2 * MiB, true],
        [2 * MiB, 2 * MiB, false],
        [4 * MiB, 4 * MiB, true],
      ],
    );
    await img.close();
  });
});
