/**
 * The tiny image builder's promises: concurrent builders share one build and leave a complete
 * cache entry, rebuilding gives byte-identical artifacts, and the VHD (written by our engine)
 * holds exactly the raw disk the recipe made.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFdError } from '../../src/core/errors.js';
import { openDisk } from '../../src/disk/open.js';
import { buildTinyImage, tinyImagePaths } from '../../src/host/images/tiny.js';

const temps: string[] = [];
after(async () => {
  for (const d of temps) await rm(d, { recursive: true, force: true });
});

const sha = async (p: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

test('concurrent builds share one cache entry; a rebuild elsewhere is byte-identical', async () => {
  const a = await mkdtemp(join(tmpdir(), 'fd-tiny-cache-a-'));
  const b = await mkdtemp(join(tmpdir(), 'fd-tiny-cache-b-'));
  temps.push(a, b);

  const [one, two] = await Promise.all([buildTinyImage({ cacheDir: a }), buildTinyImage({ cacheDir: a })]);
  assert.equal(one.dir, two.dir);
  assert.equal([one.built, two.built].filter(Boolean).length, 1, 'exactly one of two concurrent builders builds');
  const leftovers = (await readdir(join(a, 'tiny'))).filter((n) => n.startsWith('.') && n !== '.inputs.json');
  assert.deepEqual(leftovers, [], 'no temp build dirs or lock files are left behind');
  assert.equal(tinyImagePaths(join(a, 'tiny', 'current')).disk, join(a, 'tiny', 'current', 'disk.vhd'));
  assert.equal(await sha(tinyImagePaths(join(a, 'tiny', 'current')).disk), await sha(one.disk), 'current points at it');

  const cached = await buildTinyImage({ cacheDir: a });
  assert.equal(cached.built, false, 'a second call reuses the cache');

  const other = await buildTinyImage({ cacheDir: b });
  assert.equal(other.key, one.key);
  for (const f of ['kernel', 'initrd', 'disk'] as const)
    assert.equal(await sha(other[f]), await sha(one[f]), `${f} is byte-identical after a rebuild`);
});

test('a cache dir that cannot be used is a coded error, and nothing is built', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-tiny-cache-bad-'));
  temps.push(dir);
  await writeFile(join(dir, 'file'), 'not a directory');
  await assert.rejects(buildTinyImage({ cacheDir: join(dir, 'file') }), (e) =>
    isFdError(e, 'FD_IMAGE_CACHE_UNWRITABLE'),
  );
  assert.deepEqual(await readdir(dir), ['file']);
});

test('the VHD read through our engine is the raw disk the recipe made', async () => {
  const image = await buildTinyImage();
  const manifest = JSON.parse(await readFile(image.manifest, 'utf8')) as { sha256: Record<string, string> };
  const dev = await openDisk(image.disk);
  try {
    assert.equal(dev.sizeBytes, image.diskSizeBytes);
    const h = createHash('sha256');
    for (let off = 0; off < dev.sizeBytes; off += 4 << 20)
      h.update(await dev.read(off, Math.min(4 << 20, dev.sizeBytes - off)));
    assert.equal(h.digest('hex'), manifest.sha256['disk.raw']);
  } finally {
    await dev.close();
  }
});
