// `disk mount`/`unmount` end to end on real tools: a detached `flightdeck disk serve`,
// qemu-storage-daemon's FUSE export, losetup -P and mount. After unmount the image is read
// with tools that do not go through us (debugfs on a raw copy made by qemu-img) to prove that
// every write was flushed into the image.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { mountImage, unmountImage } from '../../src/host/mount.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const cliCommand = [process.execPath, fileURLToPath(new URL('../../src/cli/main.js', import.meta.url))];
const root = process.getuid?.() === 0;

async function debugfsCat(image: string, path: string): Promise<string> {
  return (await run('debugfs', ['-R', `cat ${path}`, image])).stdout;
}

/** A disk with an MBR (or a GPT) and an ext4 filesystem in each partition [startMiB, sizeMiB]. */
async function partitionedDisk(path: string, sizeMiB: number, parts: [number, number][], gpt = false): Promise<void> {
  const fh = await open(path, 'w');
  await fh.truncate(sizeMiB * MiB);
  const mbr = Buffer.alloc(512);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const sectors = (mib: number) => (mib * MiB) / 512;
  if (gpt) {
    mbr[446 + 4] = 0xee;
    mbr.writeUInt32LE(1, 446 + 8);
    mbr.writeUInt32LE(sectors(sizeMiB) - 1, 446 + 12);
    const header = Buffer.alloc(512);
    header.write('EFI PART', 0, 'latin1');
    header.writeBigUInt64LE(2n, 72);
    header.writeUInt32LE(128, 80);
    header.writeUInt32LE(128, 84);
    const table = Buffer.alloc(128 * 128);
    parts.forEach(([start, size], i) => {
      table.fill(0xaf, i * 128, i * 128 + 16); // any non-zero type GUID marks the entry used
      table.writeBigUInt64LE(BigInt(sectors(start)), i * 128 + 32);
      table.writeBigUInt64LE(BigInt(sectors(start + size) - 1), i * 128 + 40);
    });
    await fh.write(header, 0, 512, 512);
    await fh.write(table, 0, table.length, 1024);
  } else {
    parts.forEach(([start, size], i) => {
      mbr[446 + 16 * i + 4] = 0x83;
      mbr.writeUInt32LE(sectors(start), 446 + 16 * i + 8);
      mbr.writeUInt32LE(sectors(size), 446 + 16 * i + 12);
    });
  }
  await fh.write(mbr, 0, 512, 0);
  await fh.close();
  for (const [start, size] of parts) {
    await run('mkfs.ext4', ['-q', '-F', '-E', `offset=${start * MiB}`, path, `${size * 1024}k`]);
  }
}

describe(
  'disk mount through vdisk, qemu-storage-daemon FUSE and a loop device',
  { skip: !root && 'needs root' },
  () => {
    let dir: string;
    let stateDir: string;
    let cleanup: () => Promise<void>;
    before(async () => {
      ({ dir, cleanup } = await tempDir('fd-mount-'));
      stateDir = join(dir, 'state');
    });
    after(async () => {
      // Leave nothing mounted if an assertion failed half-way.
      for (const m of ['mnt-raw', 'mnt-vhd', 'mnt-part', 'mnt-ro']) {
        await unmountImage(join(dir, m), { stateDir }).catch(() => undefined);
      }
      await cleanup();
    });

    test('a file written into a mounted VHD is in the image after unmount (read by qemu-img + debugfs)', async () => {
      const raw = join(dir, 'src.raw');
      await run('truncate', ['-s', '64M', raw]);
      await run('mkfs.ext4', ['-q', '-F', raw]);
      const vhd = join(dir, 'disk.vhd');
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic', raw, vhd]);
      const mnt = join(dir, 'mnt-vhd');
      await mkdir(mnt);

      const state = await mountImage({ image: vhd, dir: mnt, cliCommand, stateDir });
      assert.equal(state.device, state.loopDevice, 'an unpartitioned disk mounts whole');
      const payload = Buffer.alloc(3 * MiB, 'flightdeck-').toString();
      await writeFile(join(mnt, 'hello.txt'), payload);
      await unmountImage(mnt, { stateDir });

      assert.deepEqual(await readdir(stateDir), [], 'unmount removed the mount record');
      const mounts = await readFile('/proc/self/mountinfo', 'utf8');
      assert.equal(mounts.includes(mnt), false, 'nothing left mounted');
      const back = join(dir, 'back.raw');
      await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', vhd, back]);
      assert.equal(await debugfsCat(back, '/hello.txt'), payload);
      await run('e2fsck', ['-fn', back]);
      assert.deepEqual((await checkVhd(vhd)).problems, [], 'flightdeck disk check finds the VHD clean');
    });

    test('partitions: the only one mounts by default; with two, --partition picks (MBR and GPT)', async () => {
      const mnt = join(dir, 'mnt-part');
      await mkdir(mnt);
      const one = join(dir, 'one.raw');
      await partitionedDisk(one, 32, [[1, 30]]);
      const s1 = await mountImage({ image: one, dir: mnt, cliCommand, stateDir });
      assert.equal(s1.partition, 1);
      await writeFile(join(mnt, 'a.txt'), 'partition one');
      await unmountImage(mnt, { stateDir });
      const s2 = await mountImage({ image: one, dir: mnt, cliCommand, stateDir, partition: 1 });
      assert.equal(await readFile(join(mnt, 'a.txt'), 'utf8'), 'partition one', 'the write survived unmount');
      await unmountImage(mnt, { stateDir });
      assert.equal(s2.partition, 1);
      await assert.rejects(
        mountImage({ image: one, dir: mnt, cliCommand, stateDir, partition: 2 }),
        (err: Error & { code?: string }) => err.code === 'FD_MOUNT_NO_PARTITION',
      );
      assert.deepEqual(await readdir(stateDir), [], 'a failed mount leaves no record behind');

      for (const gpt of [false, true]) {
        const two = join(dir, `two-${gpt ? 'gpt' : 'mbr'}.raw`);
        await partitionedDisk(
          two,
          48,
          [
            [1, 16],
            [20, 24],
          ],
          gpt,
        );
        await assert.rejects(
          mountImage({ image: two, dir: mnt, cliCommand, stateDir }),
          (err: Error & { code?: string }) => err.code === 'FD_MOUNT_PARTITION_REQUIRED',
        );
        await mountImage({ image: two, dir: mnt, cliCommand, stateDir, partition: 2 });
        await writeFile(join(mnt, 'b.txt'), 'partition two');
        await unmountImage(mnt, { stateDir });
        // debugfs reads the second filesystem straight from the file: the write is there, at 20 MiB.
        const part2 = join(dir, 'part2.raw');
        await run('dd', [`if=${two}`, `of=${part2}`, 'bs=1M', 'skip=20', 'count=24', 'status=none']);
        assert.equal(
          await debugfsCat(part2, '/b.txt'),
          'partition two',
          `partition 2 of the ${gpt ? 'GPT' : 'MBR'} disk`,
        );
      }
    });

    test('a read-only mount refuses writes and leaves the image byte-identical', async () => {
      const img = join(dir, 'ro.raw');
      await run('truncate', ['-s', '32M', img]);
      await run('mkfs.ext4', ['-q', '-F', img]);
      const before = await readFile(img);
      const mnt = join(dir, 'mnt-ro');
      await mkdir(mnt);
      await mountImage({ image: img, dir: mnt, cliCommand, stateDir, readOnly: true });
      try {
        await assert.rejects(writeFile(join(mnt, 'x'), 'no'), /EROFS/);
      } finally {
        await unmountImage(mnt, { stateDir });
      }
      assert.equal(Buffer.compare(await readFile(img), before), 0);
    });

    test('unmount of a directory that was never mounted is a clear error', async () => {
      await assert.rejects(
        unmountImage(join(dir, 'mnt-raw'), { stateDir }),
        (err: Error & { code?: string }) => err.code === 'FD_MOUNT_NOT_FOUND',
      );
    });
  },
);
