import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, open, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB } from '../../core/units.js';
import { pattern, withTempDir } from '../../../test/disk/helpers.js';
import { parentCandidates } from './chain.js';
import { createDifferencingVhd, createVhd } from './create.js';
import { encodeUtf16, locatorSpaceBytes, parseDynamicHeader, serializeDynamicHeader } from './dynamic-header.js';
import { VhdImage } from './image.js';
import { vhdChecksum } from './footer.js';

test('parent candidates: W2ru relative first, W2ku absolute, then the names beside the child', () => {
  const header = parseDynamicHeader(
    serializeDynamicHeader({
      tableOffset: 1536,
      headerVersion: 0x10000,
      maxTableEntries: 1,
      blockSize: 2 * MiB,
      checksum: 0,
      parentUuid: Buffer.alloc(16, 1),
      parentTimestamp: 0,
      parentName: 'C:\\VMs\\base.vhd',
      locators: [],
    }),
  );
  const got = parentCandidates('/data/vms/child.vhd', header, [
    { platformCode: 'W2ku', raw: 'C:\\VMs\\base.vhd' },
    { platformCode: 'W2ru', raw: '..\\golden\\base.vhd' },
    { platformCode: 'MacX', raw: 'file:///srv/base.vhd' },
  ]);
  assert.deepEqual(got, ['/data/golden/base.vhd', '/srv/base.vhd', '/data/vms/base.vhd']);
});

test('locator data space is read as bytes (Windows) or sectors (spec)', () => {
  assert.equal(locatorSpaceBytes({ platformCode: 'W2ru', dataSpace: 512, dataLength: 20, dataOffset: 0 }), 512);
  assert.equal(locatorSpaceBytes({ platformCode: 'W2ru', dataSpace: 1, dataLength: 20, dataOffset: 0 }), 512);
  assert.equal(locatorSpaceBytes({ platformCode: 'W2ru', dataSpace: 2, dataLength: 20, dataOffset: 0 }), 1024);
});

test('a Windows-made child (absolute C:\\ path, relative path in a moved tree, sectors data space) finds its parent', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'golden'));
    const base = join(dir, 'golden', 'base.vhd');
    await createVhd(base, { sizeBytes: 2 * MiB });
    const p = await VhdImage.open(base, { write: true });
    await p.write(0, pattern(2 * MiB, 4));
    await p.close();
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    // Rewrite the locators the way Hyper-V on another machine would: drive-letter paths only.
    const buf = await readFile(child);
    const header = parseDynamicHeader(buf.subarray(512, 1536));
    const texts = ['.\\golden\\base.vhd', 'D:\\Hyper-V\\golden\\base.vhd'];
    header.locators = header.locators.map((loc, i) => {
      const data = encodeUtf16(texts[i]!, 'le');
      buf.fill(0, loc.dataOffset, loc.dataOffset + locatorSpaceBytes(loc));
      data.copy(buf, loc.dataOffset);
      return { ...loc, dataLength: data.length, dataSpace: 1 };
    });
    header.parentName = 'D:\\Hyper-V\\golden\\base.vhd';
    serializeDynamicHeader(header).copy(buf, 512);
    await writeFile(child, buf);
    const img = await VhdImage.open(child);
    assert.equal(img.parent?.path, base);
    assert.ok((await img.read(0, 2 * MiB)).equals(pattern(2 * MiB, 4)));
    await img.close();
  });
});

test('writeZeroes: a differencing child masks the parent with zeros; a dynamic disk allocates nothing for zeros', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: 4 * MiB });
    const p = await VhdImage.open(base, { write: true });
    await p.write(0, pattern(4 * MiB, 1));
    await p.writeZeroes(MiB, 1000);
    await p.close();
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const c = await VhdImage.open(child, { write: true });
    await c.writeZeroes(512, 4096 + 100, { fua: true });
    const got = await c.read(0, 8192);
    const expect = pattern(4 * MiB, 1).subarray(0, 8192);
    expect.fill(0, 512, 512 + 4096 + 100);
    assert.ok(got.equals(expect));
    const ext = await c.blockStatus(MiB, 1024);
    assert.ok(ext.every((e) => !e.hole));
    await c.close();
    const d = join(dir, 'd.vhd');
    await createVhd(d, { sizeBytes: 4 * MiB });
    const di = await VhdImage.open(d, { write: true });
    await di.writeZeroes(0, 4 * MiB);
    assert.equal(di.bat!.filter((e) => e !== 0xffffffff).length, 0);
    await di.write(0, pattern(4 * MiB, 8));
    await di.writeZeroes(MiB, 3 * MiB, { mayTrim: true });
    assert.equal(di.bat!.filter((e) => e !== 0xffffffff).length, 1, 'the whole block 1 was unallocated');
    const expectD = Buffer.alloc(4 * MiB);
    pattern(4 * MiB, 8).copy(expectD, 0, 0, MiB);
    assert.ok((await di.read(0, 4 * MiB)).equals(expectD));
    await di.close();
    // the parent's own zeroed range
    const pb = await VhdImage.open(base);
    assert.ok((await pb.read(MiB, 1000)).equals(Buffer.alloc(1000)));
    await pb.close();
  });
});

test('a write to a read-only image or past the end is refused with a code', async () => {
  await withTempDir(async (dir) => {
    const d = join(dir, 'd.vhd');
    await createVhd(d, { sizeBytes: MiB });
    const ro = await VhdImage.open(d);
    await assert.rejects(ro.write(0, Buffer.alloc(512)), /read-only/);
    await assert.rejects(ro.read(MiB - 512, 1024), /outside the disk/);
    await ro.close();
    // checksum helper sanity: the created footer verifies
    const fh = await open(d, 'r');
    const f = Buffer.alloc(512);
    await fh.read(f, 0, 512, 0);
    await fh.close();
    assert.equal(vhdChecksum(f, 64), f.readUInt32BE(64));
  });
});
