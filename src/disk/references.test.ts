import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../core/errors.js';
import { run } from '../core/process.js';
import { withTempDir } from '../../test/disk/helpers.js';
import { assertSelfContained, findExternalReferences, vmdkDescriptorReferences } from './references.js';
import { createDifferencingVhd, createVhd } from './vhd/create.js';

const kinds = async (path: string): Promise<string[]> =>
  (await findExternalReferences(path)).references.map((r) => r.kind);

test('qcow2: a backing file and an external data file are found; a standalone qcow2 has none', async () => {
  await withTempDir(async (dir) => {
    const plain = join(dir, 'plain.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '4M']);
    assert.deepEqual(await kinds(plain), []);

    const backed = join(dir, 'backed.qcow2');
    // -u: do not open the backing file now; the name alone is what an attacker ships.
    await run('qemu-img', ['create', '-q', '-u', '-f', 'qcow2', '-b', '/etc/shadow', '-F', 'raw', backed, '4M']);
    const b = await findExternalReferences(backed);
    assert.deepEqual(
      b.references.map((r) => [r.kind, r.detail]),
      [['qcow2-backing-file', '/etc/shadow']],
    );

    const withData = join(dir, 'data.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'guest.raw')}`, withData, '4M']);
    const d = await findExternalReferences(withData);
    assert.ok(d.references.some((r) => r.kind === 'qcow2-data-file' && r.detail === join(dir, 'guest.raw')));
  });
});

test('VMDK: a descriptor with a FLAT extent or a parent hint refers outside; ZERO extents do not', () => {
  const extent = vmdkDescriptorReferences(
    '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 1 FLAT "/etc/shadow" 0\n',
  );
  assert.deepEqual(
    extent.map((r) => r.kind),
    ['vmdk-extent'],
  );
  assert.match(extent[0]!.detail, /\/etc\/shadow/);
  const relative = vmdkDescriptorReferences('# Disk DescriptorFile\nversion=1\nRW 8 SPARSE "../../token"\n');
  assert.equal(relative[0]?.kind, 'vmdk-extent');
  const odd = vmdkDescriptorReferences('# Disk DescriptorFile\nversion=1\nrw 8 flat   "/etc/passwd" 0\n');
  assert.ok(odd.length > 0, 'an extent line in odd case is still refused');
  const parent = vmdkDescriptorReferences('# Disk DescriptorFile\nparentFileNameHint="/srv/base.vmdk"\nRW 8 ZERO\n');
  assert.deepEqual(
    parent.map((r) => [r.kind, r.detail]),
    [['vmdk-parent', '/srv/base.vmdk']],
  );
  assert.deepEqual(vmdkDescriptorReferences('# Disk DescriptorFile\nversion=1\nRW 2048 ZERO\n'), []);
});

test('VMDK files: a monolithicSparse disk is self-contained; its delta child and a capacity-0 header are not', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vmdk');
    await run('qemu-img', ['create', '-q', '-f', 'vmdk', base, '4M']);
    assert.deepEqual(await kinds(base), []);
    const child = join(dir, 'child.vmdk');
    await run('qemu-img', ['create', '-q', '-f', 'vmdk', '-b', base, '-F', 'vmdk', child]);
    assert.deepEqual(await kinds(child), ['vmdk-parent']);
    // Capacity 0 makes QEMU take the extents from the embedded descriptor instead of the file.
    const zero = join(dir, 'zero.vmdk');
    const bytes = await readFile(base);
    bytes.writeBigUInt64LE(0n, 12);
    await writeFile(zero, bytes);
    assert.deepEqual(await kinds(zero), ['vmdk-descriptor-extents']);
    const text = join(dir, 'desc.vmdk');
    await writeFile(text, '# Disk DescriptorFile\nversion=1\nRW 8 FLAT "/etc/hostname" 0\n');
    assert.deepEqual(await kinds(text), ['vmdk-extent']);
  });
});

test('VHD: a differencing disk refers to its parent; dynamic and fixed do not', async () => {
  await withTempDir(async (dir) => {
    const parent = join(dir, 'parent.vhd');
    await createVhd(parent, { sizeBytes: 4 * 1024 * 1024 });
    assert.deepEqual(await kinds(parent), []);
    const fixed = join(dir, 'fixed.vhd');
    await createVhd(fixed, { sizeBytes: 1024 * 1024, type: 'fixed' });
    assert.deepEqual(await kinds(fixed), []);
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, parent);
    assert.deepEqual(await kinds(child), ['vhd-parent']);
    // A child whose trailing footer was lost is still told by the copy at its start.
    const fh = await open(child, 'r+');
    const { size } = await fh.stat();
    await fh.truncate(size - 512);
    await fh.close();
    assert.deepEqual(await kinds(child), ['vhd-parent']);
  });
});

test('assertSelfContained: FD_DISK_EXTERNAL_REFERENCE names what was found; raw passes', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'disk.raw');
    await writeFile(raw, Buffer.alloc(4096, 7));
    assert.equal(await assertSelfContained(raw), 'raw');
    const text = join(dir, 'desc.vmdk');
    await writeFile(text, '# Disk DescriptorFile\nversion=1\nRW 8 FLAT "/etc/shadow" 0\n');
    await assert.rejects(assertSelfContained(text, 'the upload'), (err: unknown) => {
      assert.ok(isFdError(err, 'FD_DISK_EXTERNAL_REFERENCE'), String(err));
      assert.match(err.message, /the upload is a vmdk image that refers to other files.*\/etc\/shadow/);
      return true;
    });
  });
});
