/**
 * The disk half of an import: each packaged disk becomes a dynamic VHD whatever format the
 * package holds, with the descriptor's capacity enforced, and nothing left behind on failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import type { OvfDisk } from '../../src/ovf/model.js';
import { importDiskToVhd } from '../../src/ovf/import-disk.js';
import { writeOva } from '../../src/ovf/ova-writer.js';
import { readPackage } from '../../src/ovf/package.js';
import { writeOvf } from '../../src/ovf/writer.js';
import { withTempDir } from './helpers.js';

const MiB = 2 ** 20;

async function sourceRaw(path: string, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(sizeBytes);
  await fh.write(randomBytes(MiB), 0, MiB, MiB);
  await fh.close();
}

/** An OVA with one disk file (in whatever format) declared with `capacityBytes`. */
async function ova(
  dir: string,
  diskFile: string,
  capacityBytes: number,
  format: OvfDisk['formatKind'],
): Promise<string> {
  const disk: OvfDisk = { diskId: 'd1', capacityBytes, fileRef: 'f1', formatKind: format };
  const descriptor = writeOvf({
    files: [{ id: 'f1', href: 'disk.img' }],
    disks: [disk],
    networks: [],
    configurations: [],
    entity: {
      kind: 'VirtualSystem',
      id: 'vm',
      name: 'vm',
      controllers: [],
      disks: [{ instanceId: '1', diskId: 'd1' }],
      nics: [],
      drives: [],
      devices: [],
      products: [],
      eulas: [],
      extensions: [],
    },
  });
  const out = join(dir, `${format}-${capacityBytes}.ova`);
  await writeOva(out, { descriptorName: 'vm.ovf', descriptor, files: [{ name: 'disk.img', path: diskFile }] });
  return out;
}

async function importAll(path: string, out: string) {
  const results: Awaited<ReturnType<typeof importDiskToVhd>>[] = [];
  await readPackage(path, {
    onFile: async (f) => {
      const r = await readPackage(path, { descriptorOnly: true });
      const disk = r.envelope.disks.find((d) => d.fileRef === f.file.id)!;
      results.push(await importDiskToVhd(f, disk, out));
    },
  });
  return results[0]!;
}

test('streamOptimized, qcow2, monolithicSparse and raw disks all become VHDs equal to their source', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    await sourceRaw(raw, 12 * MiB);
    const cases: [string, OvfDisk['formatKind'], string[], boolean][] = [
      ['stream.vmdk', 'vmdk-streamOptimized', ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], true],
      ['sparse.vmdk', 'vmdk-sparse', ['-O', 'vmdk', '-o', 'subformat=monolithicSparse'], false],
      ['disk.qcow2', 'qcow2', ['-O', 'qcow2'], false],
    ];
    for (const [name, kind, args, streamed] of cases) {
      const file = join(dir, name);
      await run('qemu-img', ['convert', '-f', 'raw', ...args, raw, file]);
      const vhd = join(dir, `${name}.vhd`);
      const r = await importAll(await ova(dir, file, 12 * MiB, kind), vhd);
      assert.equal(r.streamed, streamed, name);
      assert.equal(r.sizeBytes, 12 * MiB, name);
      assert.deepEqual(r.warnings, [], name);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, vhd], { allowFail: true });
      assert.equal(cmp.code, 0, `${name}: ${cmp.stdout}`);
    }
    // Raw declared as streamOptimized: converted as what it is, with a warning.
    const vhd = join(dir, 'raw.vhd');
    const r = await importAll(await ova(dir, raw, 12 * MiB, 'vmdk-streamOptimized'), vhd);
    assert.equal(r.detected, 'raw');
    assert.match(r.warnings[0]!, /descriptor says vmdk-streamOptimized, the file holds raw/);
    assert.equal((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, vhd], { allowFail: true })).code, 0);
  });
});

test('a capacity smaller than the image is refused naming disk, field and file; nothing is left', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    await sourceRaw(raw, 12 * MiB);
    const vmdk = join(dir, 's.vmdk');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, vmdk]);
    const out = join(dir, 'out');
    await import('node:fs/promises').then((fs) => fs.mkdir(out));
    for (const [file, kind] of [
      [vmdk, 'vmdk-streamOptimized'],
      [raw, 'raw'],
    ] as const) {
      await assert.rejects(
        importAll(await ova(dir, file, 8 * MiB, kind), join(out, 'x.vhd')),
        (e) =>
          isFdError(e, 'FD_OVF_CAPACITY_TOO_SMALL') &&
          /^Disk d1: ovf:capacity 8388608 .* image in disk\.img$/.test(e.message),
      );
      assert.deepEqual(await readdir(out), [], kind);
    }
  });
});

test('an image smaller than its declared capacity grows to it', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    await sourceRaw(raw, 12 * MiB);
    const vmdk = join(dir, 's.vmdk');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, vmdk]);
    for (const [file, kind] of [
      [vmdk, 'vmdk-streamOptimized'],
      [raw, 'raw'],
    ] as const) {
      const vhd = join(dir, `${kind}.vhd`);
      const r = await importAll(await ova(dir, file, 20 * MiB, kind), vhd);
      assert.equal(r.sizeBytes, 20 * MiB, kind);
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'vpc', vhd])).stdout) as {
        'virtual-size': number;
      };
      assert.equal(info['virtual-size'], 20 * MiB, kind);
      // Same data; the grown tail reads as zeros.
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, vhd], { allowFail: true });
      assert.equal(cmp.code, 0, `${kind}: ${cmp.stdout}`);
    }
  });
});
