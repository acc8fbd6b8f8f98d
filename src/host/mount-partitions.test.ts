import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { choosePartition, readPartitions } from './mount-partitions.js';

const MiB = 1024 * 1024;
let dir: string;
before(async () => (dir = await mkdtemp(join(tmpdir(), 'fd-parts-'))));
after(async () => rm(dir, { recursive: true, force: true }));

async function disk(name: string, sizeBytes: number, writes: [number, Buffer][]): Promise<string> {
  const path = join(dir, name);
  const fh = await open(path, 'w');
  await fh.truncate(sizeBytes);
  for (const [off, b] of writes) await fh.write(b, 0, b.length, off);
  await fh.close();
  return path;
}

function mbr(entries: { type: number; lba: number; count: number }[]): Buffer {
  const b = Buffer.alloc(512);
  entries.forEach((e, i) => {
    b[446 + 16 * i + 4] = e.type;
    b.writeUInt32LE(e.lba, 446 + 16 * i + 8);
    b.writeUInt32LE(e.count, 446 + 16 * i + 12);
  });
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

test('MBR primary partitions keep their slot numbers; extended and empty slots are skipped', async () => {
  const path = await disk('mbr.raw', 16 * MiB, [
    [
      0,
      mbr([
        { type: 0x83, lba: 2048, count: 4096 },
        { type: 0, lba: 0, count: 0 },
        { type: 0x05, lba: 8192, count: 2048 },
        { type: 0x07, lba: 16384, count: 8192 },
      ]),
    ],
  ]);
  const parts = await readPartitions(path);
  assert.deepEqual(
    parts.map((p) => [p.number, p.offsetBytes, p.sizeBytes, p.type]),
    [
      [1, MiB, 2 * MiB, '83'],
      [4, 8 * MiB, 4 * MiB, '07'],
    ],
  );
  assert.equal(choosePartition(parts, 4)?.offsetBytes, 8 * MiB);
  assert.throws(() => choosePartition(parts, undefined), /FD_MOUNT_PARTITION_REQUIRED|2 partitions/);
  assert.throws(
    () => choosePartition(parts, 2),
    (e: Error & { code?: string }) => e.code === 'FD_MOUNT_NO_PARTITION',
  );
});

test('GPT entries are read through the protective MBR', async () => {
  const header = Buffer.alloc(512);
  header.write('EFI PART', 0, 'latin1');
  header.writeBigUInt64LE(2n, 72);
  header.writeUInt32LE(4, 80);
  header.writeUInt32LE(128, 84);
  const table = Buffer.alloc(4 * 128);
  table.fill(0x11, 128, 144); // entry 2 used, entry 1 empty
  table.writeBigUInt64LE(2048n, 128 + 32);
  table.writeBigUInt64LE(4095n, 128 + 40);
  const path = await disk('gpt.raw', 4 * MiB, [
    [0, mbr([{ type: 0xee, lba: 1, count: 8191 }])],
    [512, header],
    [1024, table],
  ]);
  const parts = await readPartitions(path);
  assert.deepEqual(
    parts.map((p) => [p.number, p.offsetBytes, p.sizeBytes]),
    [[2, MiB, MiB]],
  );
  assert.equal(choosePartition(parts, undefined)?.number, 2, 'the only partition is the default');
});

test('a disk without a table, or a boot sector whose entries do not fit, mounts whole', async () => {
  const blank = await disk('blank.raw', MiB, []);
  assert.deepEqual(await readPartitions(blank), []);
  assert.equal(choosePartition([], undefined), null);
  const junk = await disk('junk.raw', MiB, [[0, mbr([{ type: 0x83, lba: 2048, count: 1 << 30 }])]]);
  assert.deepEqual(await readPartitions(junk), []);
});
