/**
 * Bad input is a clear error with a stable code, never a crash, a hang or a write: hand-made
 * damage of each kind, then a fuzzer that mutates real fixtures thousands of times.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, chmod, open, readFile, rename, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../src/core/errors.js';
import { MiB } from '../../src/core/units.js';
import { openDisk } from '../../src/disk/open.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';
import { vhdChecksum } from '../../src/disk/vhd/footer.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { fixture, pattern, sha256, withTempDir } from './helpers.js';

/** Patches bytes of a file; `fix` recomputes the checksums of both footers and the dynamic header. */
async function patch(path: string, edits: Array<[number, Buffer]>, fix = true): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    for (const [at, bytes] of edits) await fh.write(bytes, 0, bytes.length, at < 0 ? (await fh.stat()).size + at : at);
    if (fix) await fixChecksums(fh);
  } finally {
    await fh.close();
  }
}

async function fixChecksums(fh: Awaited<ReturnType<typeof open>>): Promise<void> {
  const size = (await fh.stat()).size;
  for (const at of [0, size - 512]) {
    if (at < 0) continue;
    const b = Buffer.alloc(512);
    await fh.read(b, 0, 512, at);
    if (b.toString('latin1', 0, 8) !== 'conectix') continue;
    b.writeUInt32BE(vhdChecksum(b, 64), 64);
    await fh.write(b, 0, 512, at);
    const dataOffset = Number(b.readBigUInt64BE(16));
    if (dataOffset > 0 && dataOffset + 1024 <= size) {
      const h = Buffer.alloc(1024);
      await fh.read(h, 0, 1024, dataOffset);
      if (h.toString('latin1', 0, 8) === 'cxsparse') {
        h.writeUInt32BE(vhdChecksum(h, 36), 36);
        await fh.write(h, 0, 1024, dataOffset);
      }
    }
  }
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}
function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

async function expectCode(path: string, code: string): Promise<void> {
  const before = sha256(await readFile(path));
  await assert.rejects(VhdImage.open(path, { write: true }), (e) => isFdError(e) && e.code === code, code);
  const r = await checkVhd(path);
  assert.ok(
    r.problems.some((p) => p.code === code),
    `check reports ${code}: ${JSON.stringify(r.problems)}`,
  );
  assert.equal(sha256(await readFile(path)), before, 'nothing was written');
}

async function dynamicWithData(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await createVhd(path, { sizeBytes: 8 * MiB });
  const img = await VhdImage.open(path, { write: true });
  await img.write(0, pattern(MiB, 1));
  await img.write(4 * MiB, pattern(MiB, 2));
  await img.close();
  return path;
}

test('each kind of damage is its own stable error code, and nothing is written', async () => {
  await withTempDir(async (dir) => {
    // Truncated: the file ends inside the allocated data.
    let p = await dynamicWithData(dir, 'trunc.vhd');
    await truncate(p, (await stat(p)).size - 3 * MiB);
    await assert.rejects(
      VhdImage.open(p),
      (e) => isFdError(e) && ['FD_VHD_BAT_PAST_EOF', 'FD_VHD_TRUNCATED'].includes(e.code),
    );
    p = join(dir, 'tiny.vhd');
    await writeFile(p, Buffer.alloc(100));
    await assert.rejects(VhdImage.open(p), (e) => isFdError(e, 'FD_VHD_TRUNCATED'));

    p = await dynamicWithData(dir, 'cookie.vhd');
    await patch(
      p,
      [
        [0, Buffer.from('notavhd!')],
        [-512, Buffer.from('notavhd!')],
      ],
      false,
    );
    await expectCode(p, 'FD_VHD_BAD_COOKIE');

    p = await dynamicWithData(dir, 'sum.vhd');
    await patch(
      p,
      [
        [0, Buffer.from([1])],
        [-512 + 40, Buffer.from([1])],
      ],
      false,
    );
    await expectCode(p, 'FD_VHD_BAD_CHECKSUM');

    p = await dynamicWithData(dir, 'hdrsum.vhd');
    await patch(p, [[512 + 100, Buffer.from([7])]], false);
    await expectCode(p, 'FD_VHD_BAD_CHECKSUM');

    p = await dynamicWithData(dir, 'bateof.vhd');
    await patch(p, [[1536 + 4, u32(0x00ffff00)]]);
    await expectCode(p, 'FD_VHD_BAT_PAST_EOF');

    p = await dynamicWithData(dir, 'overlap.vhd');
    const bat0 = (await readFile(p)).readUInt32BE(1536);
    await patch(p, [[1536 + 8, u32(bat0 + 8)]]);
    await expectCode(p, 'FD_VHD_BAT_OVERLAP');

    p = await dynamicWithData(dir, 'onbat.vhd');
    await patch(p, [[1536 + 8, u32(3)]]);
    await expectCode(p, 'FD_VHD_BAT_OVERLAP');

    p = await dynamicWithData(dir, 'absurd.vhd');
    await patch(p, [
      [48, u64(0x7fffffffffffffffn)],
      [-512 + 48, u64(0x7fffffffffffffffn)],
    ]);
    await expectCode(p, 'FD_VHD_BAD_SIZE');

    p = await dynamicWithData(dir, 'huge.vhd');
    await patch(p, [
      [48, u64(1n << 45n)],
      [-512 + 48, u64(1n << 45n)],
    ]);
    await expectCode(p, 'FD_VHD_BAD_SIZE');

    p = await dynamicWithData(dir, 'blocksize.vhd');
    await patch(p, [[512 + 32, u32(3 * MiB)]]);
    await expectCode(p, 'FD_VHD_BAD_BLOCK_SIZE');

    p = await dynamicWithData(dir, 'entries.vhd');
    await patch(p, [[512 + 28, u32(0xffffffff)]]);
    await expectCode(p, 'FD_VHD_TRUNCATED');

    p = await dynamicWithData(dir, 'type.vhd');
    await patch(p, [
      [60, u32(9)],
      [-512 + 60, u32(9)],
    ]);
    await expectCode(p, 'FD_VHD_BAD_HEADER');
  });
});

test('a parent chain that loops is FD_VHD_CHAIN_LOOP, not a hang', async () => {
  await withTempDir(async (dir) => {
    const b0 = join(dir, 'b.vhd');
    await createVhd(b0, { sizeBytes: MiB });
    const a = join(dir, 'a.vhd');
    await createDifferencingVhd(a, b0);
    const b0Uuid = (await readFile(b0)).subarray(68, 84);
    const b = join(dir, 'b-new.vhd');
    await createDifferencingVhd(b, a);
    // Give the new B the old B's identity and put it in its place: A -> B -> A.
    await patch(b, [
      [68, Buffer.from(b0Uuid)],
      [-512 + 68, Buffer.from(b0Uuid)],
    ]);
    await rename(b, b0);
    await assert.rejects(VhdImage.open(a), (e) => isFdError(e, 'FD_VHD_CHAIN_LOOP'));
    assert.ok((await checkVhd(a)).problems.some((p) => p.code === 'FD_VHD_CHAIN_LOOP'));
  });
});

// ---- fuzzing --------------------------------------------------------------------------------

const FUZZ_CASES = Number(process.env['FD_FUZZ_CASES'] ?? 3000);
const FUZZ_BUDGET_MS = Number(process.env['FD_FUZZ_BUDGET_MS'] ?? 8000);

function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

/** Opens, reads, maps and checks a (damaged) image: the only thing allowed to escape is an FdError. */
async function exercise(path: string, write: boolean): Promise<string> {
  let outcome = 'opened';
  try {
    const dev = await openDisk(path, { write });
    try {
      const size = dev.sizeBytes;
      for (const off of [0, Math.floor(size / 2 / 512) * 512, Math.max(0, size - 8192)]) {
        await dev.read(off, Math.min(8192, size - off));
        if (write) {
          await dev.write(off, Buffer.alloc(Math.min(4096, size - off), 0x42));
          await dev.writeZeroes(off, Math.min(1000, size - off), { mayTrim: true });
        }
      }
      await dev.blockStatus(0, Math.min(size, 64 * MiB));
      if (write) await dev.flush();
    } finally {
      await dev.close();
    }
  } catch (err) {
    if (!isFdError(err) || !/^FD_[A-Z0-9_]+$/.test(err.code)) throw err;
    outcome = err.code;
  }
  try {
    await checkVhd(path);
  } catch (err) {
    if (!isFdError(err)) throw err;
  }
  return outcome;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: ${what} took over ${ms} ms`)), ms);
    }),
  ]);
}

test(`fuzz: up to ${FUZZ_CASES} mutations of real fixtures (${FUZZ_BUDGET_MS} ms budget) give only FdErrors with codes, never a crash or hang`, async () => {
  await withTempDir(async (dir) => {
    // Real images from other tools plus a differencing chain of ours.
    const sources = ['vhd_dynamic_small.vhd', 'vhd_fixed_small.vhd', 'du.vhd', 'ext2.vhd', 'image.vhd'].map(fixture);
    const base = await dynamicWithData(dir, 'base.vhd');
    const child = join(dir, 'child.vhd');
    await createDifferencingVhd(child, base);
    const ci = await VhdImage.open(child, { write: true });
    await ci.write(MiB + 512, pattern(4096, 3));
    await ci.close();
    sources.push(child);
    const targets: Array<{ path: string; orig: Buffer; meta: number; fixed: boolean }> = [];
    for (const [i, src] of sources.entries()) {
      // The child's copy sits beside the base so its parent locator still resolves.
      const path = join(dir, `fuzz-${i}.vhd`);
      await copyFile(src, path);
      await chmod(path, 0o644);
      const orig = await readFile(path);
      // Where the structures are: footer copy, header, BAT, locators (the first 8 KiB), and the tail.
      targets.push({ path, orig, meta: Math.min(orig.length, 8192), fixed: src.endsWith('fixed_small.vhd') });
    }
    const rnd = rng(20261125);
    const outcomes = new Map<string, number>();
    const started = Date.now();
    let n = 0;
    for (; n < FUZZ_CASES && Date.now() - started < FUZZ_BUDGET_MS; n++) {
      const t = targets[rnd(targets.length)]!;
      const fh = await open(t.path, 'r+');
      const edits: string[] = [];
      // What to put back afterwards: only the bytes this case touched (rewriting whole files is the slow part).
      const touched: Array<[number, number]> = [];
      try {
        const kind = rnd(10);
        if (kind === 0) {
          const len = rnd(t.orig.length);
          await fh.truncate(len);
          edits.push(`truncate ${len}`);
          touched.push([len, t.orig.length - len]);
        } else {
          for (let k = 1 + rnd(4); k > 0; k--) {
            const inTail = t.fixed || rnd(3) === 0;
            const at = inTail ? t.orig.length - 512 + rnd(512) : rnd(t.meta);
            const width = [1, 2, 4, 8][rnd(4)]!;
            const bytes = Buffer.alloc(width);
            const style = rnd(4);
            for (let j = 0; j < width; j++) bytes[j] = style === 0 ? 0xff : style === 1 ? 0 : rnd(256);
            const pos = Math.min(at, t.orig.length - width);
            await fh.write(bytes, 0, width, pos);
            edits.push(`${pos}:${bytes.toString('hex')}`);
            touched.push([pos, width]);
          }
          // Most of the time make the checksums right again, to get past them into the structure.
          if (rnd(4) !== 0) {
            await fixChecksums(fh);
            touched.push([0, 512], [512, 1024], [t.orig.length - 512, 512]);
          }
        }
      } finally {
        await fh.close();
      }
      try {
        // One case in 32 also writes through the damaged image (then the whole file is restored).
        const write = rnd(32) === 0;
        if (write) touched.push([0, t.orig.length]);
        const code = await withTimeout(exercise(t.path, write), 5000, `${t.path} after ${edits.join(' ')}`);
        outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
      } catch (err) {
        assert.fail(`case ${n} (${t.path}: ${edits.join(' ')}): ${err instanceof Error ? err.stack : String(err)}`);
      }
      const w = await open(t.path, 'r+');
      for (const [at, len] of touched) await w.write(t.orig, at, len, at);
      await w.truncate(t.orig.length);
      await w.close();
    }
    for (const t of targets) assert.ok((await readFile(t.path)).equals(t.orig), 'restores were exact');
    assert.ok(n >= Math.min(FUZZ_CASES, 500), `ran ${n} cases`);
    process.stdout.write(
      `# fuzz: ${n} cases in ${Date.now() - started} ms: ${JSON.stringify(Object.fromEntries(outcomes))}\n`,
    );
    // The fuzzer must reach both outcomes, or it is not testing the parser.
    assert.ok((outcomes.get('opened') ?? 0) > 0, JSON.stringify([...outcomes]));
    assert.ok([...outcomes.keys()].filter((k) => k !== 'opened').length >= 4, JSON.stringify([...outcomes]));
  });
});
