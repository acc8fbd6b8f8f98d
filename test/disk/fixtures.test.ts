/**
 * The fixtures in ../shared/fixtures/vhd read as their sources say. Sizes, types, UUIDs and the
 * SHA-256 of the virtual disk's bytes were verified by hand once against `qemu-img convert -f vpc
 * -O raw` and `vhdiinfo` (qemu-img 7.2, vhdiinfo 20210425) and are pinned here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';
import { convertDisk } from '../../src/disk/convert.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { diskInfo } from '../../src/disk/vhd/info.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { fixture, sha256, withTempDir } from './helpers.js';

const PINNED = [
  {
    file: 'vhd_fixed_small.vhd',
    type: 'fixed',
    size: 3145728,
    creator: 'win',
    uuid: 'e3f6efea-f0c0-c445-820a-145e5c4fe7ef',
    sha256: '0d75b4c53a0f40b4518cc20282b9901d76fdee0e205ac9925243861c775bba51',
  },
  {
    file: 'vhd_dynamic_small.vhd',
    type: 'dynamic',
    size: 3145728,
    creator: 'win',
    uuid: 'e2c351ed-a793-f24f-b7c4-d0b6407d49b0',
    sha256: '8fe72dbeebd3f1cb9d3ad92c9f5835043ef31648a90c7db4fe4e3f143167416a',
  },
  // Creator "dutl" is not one QEMU 7.2 trusts for the current size (3 MiB): CHS 90/4/17 wins.
  {
    file: 'du.vhd',
    type: 'dynamic',
    size: 3133440,
    creator: 'dutl',
    uuid: '32139690-a997-451f-b75a-e0bee2fa8de2',
    sha256: 'ea24c9011aae07b2da86136655573bec32056fef326b76f720ac4b361833b16b',
  },
  {
    file: 'ext2.vhd',
    type: 'dynamic',
    size: 4212736,
    creator: 'qemu',
    uuid: 'b61f53ca-a786-4528-90e2-55ba791a1c4c',
    sha256: '870be7ae16c1fa8faab05c6eb9205dc9a7ae35c5f552c5cf8a267c0bc6a5cb99',
  },
] as const;

test('fixtures: pinned type, size, creator, uuid and content hash; check is clean', async () => {
  for (const f of PINNED) {
    const info = await diskInfo(fixture(f.file));
    assert.equal(info.type, f.type, f.file);
    assert.equal(info.virtualSize, f.size, f.file);
    assert.equal(info.creatorApp, f.creator, f.file);
    assert.equal(info.uuid, f.uuid, f.file);
    const img = await VhdImage.open(fixture(f.file));
    try {
      assert.equal(sha256(await img.read(0, img.sizeBytes)), f.sha256, f.file);
    } finally {
      await img.close();
    }
    assert.deepEqual((await checkVhd(fixture(f.file))).problems, [], f.file);
  }
});

test('du.vhd: info says the size comes from CHS, while the footer says 3 MiB', async () => {
  const info = await diskInfo(fixture('du.vhd'));
  assert.equal(info.vhd?.sizeFrom, 'chs');
  assert.equal(info.vhd?.currentSize, 3 * 1024 * 1024);
  assert.deepEqual(info.vhd?.geometry, { cylinders: 90, heads: 4, sectorsPerTrack: 17 });
});

test('ext2.vhd converted by us holds a clean ext2 filesystem (e2fsck)', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'ext2.raw');
    await convertDisk(fixture('ext2.vhd'), raw, { to: 'raw' });
    const r = await run('e2fsck', ['-fn', raw], { allowFail: true });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ext2_test: 16\/1024 files/);
  });
});

test('fixture files are byte for byte as copied from their sources (tests and tools never modify them)', async () => {
  // Root ignores the read-only mode of ../shared, so a stray `check --repair` could change them.
  const files: Record<string, string> = {
    'du.vhd': 'a36714581bc05f45c8f1830c7c6e1702779e1b820f78bce6a7354b82eb265c2b',
    'ext2.vhd': '225f16a8d65ba442fbd9958606b60bb6001b33be024b90661baffd67f3210230',
    'image.vhd': '6438e92bda74f4f2f190cc665ffa5179174a8d614a2e6a38d5eb3a794642a8a8',
    'vhd_dynamic_small.vhd': '74efb4d3a13bcbf3e64eea5e54a797e25c01dc2519567355f3ecf7db329995f1',
    'vhd_fixed_small.vhd': 'e0f982b300c0f28e2642f1badb1092c1eff88f69d21edcd012f28b0120bdf945',
  };
  for (const [name, hash] of Object.entries(files)) {
    assert.equal(sha256(await readFile(fixture(name))), hash, name);
  }
});
