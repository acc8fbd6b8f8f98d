import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, chmod, readFile, stat, writeFile, open, access } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import { MiB } from '../../core/units.js';
import { fixture, pattern, qemuImg, qemuVirtualSize, withTempDir } from '../../../test/disk/helpers.js';
import { run, waitFor } from '../../core/process.js';
import { spawn } from 'node:child_process';
import { openersOf } from './in-use.js';
import { convertDisk } from '../convert.js';
import { checkVhd } from './check.js';
import { createDifferencingVhd, createVhd } from './create.js';
import { diskInfo } from './info.js';
import { VhdImage } from './image.js';
import { mergeVhd } from './merge.js';
import { rebuildDynamic } from './rebuild.js';
import { resizeVhd } from './resize.js';

async function vhdiMediaSize(path: string): Promise<number> {
  const out = (await run('vhdiinfo', [path])).stdout;
  const m = /Media size\s*:.*\((\d+) bytes\)/.exec(out);
  assert.ok(m, out);
  return Number(m[1]);
}

async function readAll(path: string): Promise<Buffer> {
  const img = await VhdImage.open(path);
  try {
    return await img.read(0, img.sizeBytes);
  } finally {
    await img.close();
  }
}

test('created images have exactly the size asked in qemu-img, vhdiinfo and our engine', async () => {
  await withTempDir(async (dir) => {
    // 10000384 is no CHS product: a CHS-sized reader would see 9999360 bytes.
    for (const [type, size] of [
      ['dynamic', 10000384],
      ['fixed', 10000384],
      ['dynamic', 3 * MiB],
      ['fixed', 1 * MiB],
    ] as const) {
      const path = join(dir, `${type}-${size}.vhd`);
      await createVhd(path, { sizeBytes: size, type });
      assert.equal(await qemuVirtualSize(path), size, `qemu-img ${type} ${size}`);
      assert.equal(await vhdiMediaSize(path), size, `vhdiinfo ${type} ${size}`);
      assert.equal((await diskInfo(path)).virtualSize, size);
      assert.deepEqual((await checkVhd(path)).problems, []);
    }
  });
});

test('--azure makes a fixed VHD rounded up to whole MiB', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'az.vhd');
    const made = await createVhd(path, { sizeBytes: 10_000_000, azure: true });
    assert.equal(made.type, 'fixed');
    assert.equal(made.sizeBytes, 10 * MiB);
    assert.equal((await stat(path)).size, 10 * MiB + 512);
    assert.equal(await qemuVirtualSize(path), 10 * MiB);
  });
});

test('create refuses bad sizes and existing files without writing anything', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'x.vhd');
    await assert.rejects(createVhd(path, { sizeBytes: 1000 }), (e) => isFdError(e, 'FD_VHD_BAD_SIZE'));
    await assert.rejects(createVhd(path, { sizeBytes: 3000 * 1024 * MiB }), (e) => isFdError(e, 'FD_VHD_BAD_SIZE'));
    await assert.rejects(createVhd(path, { sizeBytes: MiB, blockSizeBytes: 3 * MiB }), (e) =>
      isFdError(e, 'FD_VHD_BAD_BLOCK_SIZE'),
    );
    await assert.rejects(access(path));
    await createVhd(path, { sizeBytes: MiB });
    await assert.rejects(createVhd(path, { sizeBytes: MiB }), (e) => isFdError(e, 'FD_DISK_EXISTS'));
  });
});

test('convert raw -> vhd -> raw round-trips; qemu-img compare agrees; zeros are not stored', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 'src.raw');
    const data = Buffer.alloc(16 * MiB);
    pattern(3 * MiB, 1).copy(data, MiB);
    pattern(4096, 2).copy(data, 15 * MiB);
    await writeFile(raw, data);
    const seen: number[] = [];
    const dyn = join(dir, 'dyn.vhd');
    await convertDisk(raw, dyn, { to: 'vhd', onProgress: (p) => seen.push(p.done) });
    assert.equal(seen[seen.length - 1], 16 * MiB, 'progress reaches the total');
    await qemuImg('compare', '-f', 'raw', '-F', 'vpc', raw, dyn);
    const info = await diskInfo(dyn);
    assert.equal(info.vhd?.allocatedBlocks, 3, 'blocks 0-1 (1..4 MiB) and 7: zero blocks skipped');
    const fixed = join(dir, 'fixed.vhd');
    await convertDisk(dyn, fixed, { to: 'vhd-fixed' });
    await qemuImg('compare', '-f', 'raw', '-F', 'vpc', raw, fixed);
    const back = join(dir, 'back.raw');
    await convertDisk(fixed, back, { to: 'raw' });
    assert.ok((await readFile(back)).equals(data));
    const q = join(dir, 'out.qcow2');
    await convertDisk(dyn, q, { to: 'qcow2' });
    await qemuImg('compare', '-f', 'raw', '-F', 'qcow2', raw, q);
    const fromQ = join(dir, 'fromq.vhd');
    await convertDisk(q, fromQ, { to: 'vhd' });
    await qemuImg('compare', '-f', 'raw', '-F', 'vpc', raw, fromQ);
    await assert.rejects(convertDisk(raw, dyn, { to: 'vhd' }), (e) => isFdError(e, 'FD_DISK_EXISTS'));
  });
});

test('convert of a differencing chain flattens it', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: 4 * MiB });
    const p = await VhdImage.open(base, { write: true });
    await p.write(0, pattern(4 * MiB, 3));
    await p.close();
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const c = await VhdImage.open(child, { write: true });
    await c.write(MiB + 512, pattern(1024, 4));
    await c.close();
    const expect = await readAll(child);
    const out = join(dir, 'flat.raw');
    await convertDisk(child, out, { to: 'raw' });
    assert.ok((await readFile(out)).equals(expect));
  });
});

test('merge folds the child into the parent and removes it; the data is what the chain showed', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: 6 * MiB });
    const p = await VhdImage.open(base, { write: true });
    await p.write(0, pattern(3 * MiB, 5));
    await p.close();
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const c = await VhdImage.open(child, { write: true });
    await c.write(512 * 7, pattern(512 * 3, 6));
    await c.write(5 * MiB, pattern(4096, 7));
    await c.close();
    const expect = await readAll(child);
    const r = await mergeVhd(child);
    assert.equal(r.childRemoved, true);
    await assert.rejects(access(child));
    assert.ok((await readAll(base)).equals(expect));
    assert.deepEqual((await checkVhd(base)).problems, []);
  });
});

test('compact drops all-zero blocks and keeps the data', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'c.vhd');
    await createVhd(path, { sizeBytes: 8 * MiB });
    const img = await VhdImage.open(path, { write: true });
    await img.write(0, pattern(4096, 1));
    await img.write(4 * MiB, Buffer.alloc(MiB)); // allocates a block of zeros
    await img.close();
    const before = await readAll(path);
    const r = await rebuildDynamic(path);
    assert.equal(r.blocksBefore, 2);
    assert.equal(r.blocksAfter, 1);
    assert.ok(r.fileSizeAfter < r.fileSizeBefore);
    assert.ok((await readAll(path)).equals(before));
    await qemuImg('compare', '-f', 'vpc', '-F', 'vpc', path, path);
  });
});

test('resize grows fixed and dynamic disks; qemu-img sees the new size; data stays', async () => {
  await withTempDir(async (dir) => {
    for (const type of ['fixed', 'dynamic'] as const) {
      const path = join(dir, `${type}.vhd`);
      await createVhd(path, { sizeBytes: 3 * MiB, type });
      const img = await VhdImage.open(path, { write: true });
      await img.write(3 * MiB - 4096, pattern(4096, 8));
      await img.close();
      const before = await readAll(path);
      for (const size of [5 * MiB, 300 * MiB]) {
        await resizeVhd(path, size);
        assert.equal(await qemuVirtualSize(path), size, `${type} ${size}`);
        const after = await readAll(path);
        assert.equal(after.length, size);
        assert.ok(after.subarray(0, before.length).equals(before));
        assert.ok(after.subarray(before.length).equals(Buffer.alloc(size - before.length)), 'new space reads zeros');
        assert.deepEqual((await checkVhd(path)).problems, []);
      }
      await assert.rejects(resizeVhd(path, MiB), (e) => isFdError(e, 'FD_VHD_SHRINK'));
    }
  });
});

test('check finds a lost trailing footer and --repair restores it', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'd.vhd');
    await createVhd(path, { sizeBytes: 4 * MiB });
    const img = await VhdImage.open(path, { write: true });
    await img.write(0, pattern(8192, 1));
    await img.close();
    const expect = await readAll(path);
    const size = (await stat(path)).size;
    const fh = await open(path, 'r+');
    await fh.write(Buffer.alloc(512, 0xab), 0, 512, size - 512);
    await fh.close();
    const found = await checkVhd(path);
    assert.deepEqual(
      found.problems.map((p) => [p.code, p.repairable]),
      [['FD_VHD_FOOTER_MISSING', true]],
    );
    assert.ok((await readAll(path)).equals(expect), 'opens from the footer copy meanwhile');
    const fixed = await checkVhd(path, { repair: true });
    assert.equal(fixed.clean, true);
    assert.equal(fixed.repaired[0]?.code, 'FD_VHD_FOOTER_MISSING');
    await qemuImg('compare', '-f', 'vpc', '-F', 'vpc', path, path);
    assert.ok((await readAll(path)).equals(expect));
  });
});

test('image.vhd: check names the old-qemu checksum bug and --repair makes qemu-img open it', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'image.vhd');
    await copyFile(fixture('image.vhd'), path);
    await chmod(path, 0o644);
    const found = await checkVhd(path);
    assert.deepEqual(
      found.problems.map((p) => p.code),
      ['FD_VHD_BAD_CHECKSUM', 'FD_VHD_BAD_CHECKSUM'],
    );
    assert.match(found.problems[0]!.message, /UUID zeroed/);
    await assert.rejects(qemuImg('info', '-f', 'vpc', path));
    const r = await checkVhd(path, { repair: true });
    assert.equal(r.clean, true);
    assert.equal(await qemuVirtualSize(path), 104448);
    const img = await VhdImage.open(path);
    assert.equal(img.uuid, 'd49c5c80-350a-4a89-898a-5ad6d10f6578');
    await img.close();
  });
});

test('check reports a broken parent link and a replaced parent', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: MiB });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    assert.equal((await checkVhd(child)).clean, true);
    await import('node:fs/promises').then((fs) => fs.unlink(base));
    await createVhd(base, { sizeBytes: MiB });
    const r = await checkVhd(child);
    assert.deepEqual(
      r.problems.map((p) => p.code),
      ['FD_VHD_PARENT_MISMATCH'],
    );
    await import('node:fs/promises').then((fs) => fs.unlink(base));
    assert.deepEqual(
      (await checkVhd(child)).problems.map((p) => p.code),
      ['FD_VHD_PARENT_NOT_FOUND'],
    );
  });
});

test('merge into a differencing parent keeps the grandparent showing through', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: 4 * MiB });
    const b = await VhdImage.open(base, { write: true });
    await b.write(0, pattern(4 * MiB, 11));
    await b.close();
    const mid = join(dir, 'mid.vhd');
    await createDifferencingVhd(mid, base);
    const m = await VhdImage.open(mid, { write: true });
    await m.write(4096, pattern(4096, 12));
    await m.close();
    const top = join(dir, 'top.vhd');
    await createDifferencingVhd(top, mid);
    const t = await VhdImage.open(top, { write: true });
    await t.write(512 * 3, pattern(512, 13));
    await t.write(3 * MiB, pattern(8192, 14));
    await t.close();
    const expect = await readAll(top);
    await mergeVhd(top);
    assert.ok((await readAll(mid)).equals(expect));
    assert.deepEqual((await checkVhd(mid)).problems, []);
  });
});

test('compact, resize and merge refuse an image another process has open (FD_DISK_BUSY)', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'busy.vhd');
    await createVhd(path, { sizeBytes: 4 * MiB });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, path);
    const tail = spawn('tail', ['-f', path], { stdio: 'ignore' });
    try {
      await waitFor(
        'tail to open the image',
        async () => ((await openersOf(path)).includes(tail.pid!) ? true : undefined),
        {
          timeoutMs: 5000,
        },
      );
      await assert.rejects(
        rebuildDynamic(path),
        (e) => isFdError(e, 'FD_DISK_BUSY') && e.message.includes(String(tail.pid)),
      );
      await assert.rejects(resizeVhd(path, 8 * MiB), (e) => isFdError(e, 'FD_DISK_BUSY'));
      await assert.rejects(mergeVhd(child), (e) => isFdError(e, 'FD_DISK_BUSY'));
    } finally {
      tail.kill('SIGKILL');
    }
    await waitFor('tail to exit', async () => ((await openersOf(path)).length === 0 ? true : undefined), {
      timeoutMs: 5000,
    });
    await resizeVhd(path, 8 * MiB);
  });
});

test('an interrupted merge resumes from its journal and ends with the same data', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: 16 * MiB, blockSizeBytes: 256 * 1024 });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const c = await VhdImage.open(child, { write: true });
    for (let off = 0; off < 16 * MiB; off += 512 * 1024) await c.write(off + 512, pattern(4096, off));
    await c.close();
    const expect = await readAll(child);
    // The state a crash leaves after 40 blocks were copied and flushed: parent partly updated,
    // journal saying where to go on. Blocks before 40 are left uncopied here on purpose: if the
    // resume did not trust the journal it would copy them and the check below would see it.
    const parentImg = await VhdImage.open(base, { write: true });
    const chainImg = await VhdImage.open(child);
    await parentImg.write(40 * 256 * 1024, await chainImg.read(40 * 256 * 1024, 256 * 1024));
    const uuids = { childUuid: chainImg.uuid, parentUuid: chainImg.parent!.uuid };
    await chainImg.close();
    await parentImg.close();
    await writeFile(`${child}.merge-journal`, JSON.stringify({ ...uuids, parent: base, nextBlock: 40 }));
    assert.ok((await readAll(child)).equals(expect), 'the chain reads the same in the crashed state');
    const r = await mergeVhd(child, { flushEveryBlocks: 8 });
    assert.equal(r.resumedFromBlock, 40);
    const merged = await readAll(base);
    const from = 40 * 256 * 1024;
    assert.ok(merged.subarray(from).equals(expect.subarray(from)), 'blocks from the journal on are merged');
    assert.ok(merged.subarray(512, 4096 + 512).equals(Buffer.alloc(4096)), 'blocks before it were trusted as done');
    await assert.rejects(access(`${child}.merge-journal`));
  });
});

test('a parent modified after the child was made: check reports FD_VHD_PARENT_TIMESTAMP, the chain still opens', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: MiB });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const p = await VhdImage.open(base, { write: true });
    await p.rewriteFooter({ ...p.footer, timestamp: p.footer.timestamp + 100 });
    await p.close();
    assert.deepEqual(
      (await checkVhd(child)).problems.map((x) => x.code),
      ['FD_VHD_PARENT_TIMESTAMP'],
    );
    const c = await VhdImage.open(child);
    assert.equal(c.parentTimestampMismatch, true);
    await c.close();
  });
});

test('check of a child whose parent is damaged reports the parent and what is wrong in it', async () => {
  await withTempDir(async (dir) => {
    const base = join(dir, 'base.vhd');
    await createVhd(base, { sizeBytes: MiB });
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const fh = await open(base, 'r+');
    await fh.write(Buffer.from([0x99]), 0, 1, 512 + 100); // dynamic header checksum now wrong
    await fh.close();
    const r = await checkVhd(child);
    assert.deepEqual(
      r.problems.map((p) => [p.code, p.path]),
      [
        ['FD_VHD_PARENT_BROKEN', child],
        ['FD_VHD_BAD_CHECKSUM', base],
      ],
    );
  });
});
