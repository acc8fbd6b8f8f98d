/**
 * A power cut, not only a killed process: writes made since the last sync may or may not be on
 * the disk, in any combination. We record every file call the engine makes while it runs a
 * series of writes (some with FUA, a flush now and then), and for every crash point rebuild the
 * file from everything before the last sync plus random subsets of the writes after it. Each
 * such file must open, `check` must find nothing it cannot repair, and every sector must hold
 * what it held at the last sync or data a later write gave it: never garbage, never less than
 * what was durable.
 *
 * Dynamic images only: in a differencing image, bits set in an already allocated block can
 * reach the disk before the data they describe (see vhd/writer.ts), which this model would catch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { createVhd } from '../../src/disk/vhd/create.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { plan, stamp, stamps } from './crash-plan.js';
import { apply, recording, type Op } from './file-ops.js';
import { pattern, withTempDir } from './helpers.js';

const SIZE = 2 * 1024 * 1024;
const GENS = 40;
const SUBSETS = 3;

for (const kind of ['dynamic', 'dynamic-with-leftovers'] as const) {
  test(`power cut at every point of ${GENS} writes to a ${kind} image: durable data kept, nothing torn`, async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'img.vhd');
      await createVhd(path, { sizeBytes: SIZE, blockSizeBytes: 64 * 1024 });
      if (kind === 'dynamic-with-leftovers') await appendFile(path, pattern(SIZE, 9));
      const initial = await readFile(path);
      const writes = plan(78, GENS, SIZE / 512).map((w) => ({ ...w, count: Math.min(w.count, 300) }));
      let gen = 0;
      // A reserve of a few blocks, so it runs out and the file grows again many times.
      const img = await VhdImage.open(path, { write: true, reserveBytes: 200 * 1024 });
      const ops = await recording(
        () => img.handle.fd,
        () => gen,
        async () => {
          for (const w of writes) {
            gen = w.gen;
            await img.write(w.sector * 512, stamps(w), { fua: w.gen % 5 === 0 });
            if (w.gen % 9 === 0) await img.flush();
          }
        },
      );
      await img.close();
      assert.ok(
        ops.some((o) => o.kind === 'sync'),
        'the run synced at least once',
      );
      // Allocations inside the reserve need no sync: most allocating writes must have none.
      const syncs = ops.filter((o) => o.kind === 'sync').length;
      assert.ok(syncs < GENS, `${syncs} syncs for ${GENS} writes`);

      let x = 12345;
      const rnd = (): number => {
        x ^= x << 13;
        x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        return x / 0x100000000;
      };
      const crashed = join(dir, 'crashed.vhd');
      for (let k = 0; k <= ops.length; k++) {
        let lastSync = -1;
        for (let i = 0; i < k; i++) if (ops[i]!.kind === 'sync') lastSync = i;
        let durable: Buffer = initial;
        for (const o of ops.slice(0, lastSync + 1)) durable = apply(durable, o);
        const after = ops.slice(lastSync + 1, k);
        const allowed = allowedGens(writes, ops, lastSync, k);
        for (let r = 0; r < SUBSETS; r++) {
          let state = durable;
          const kept: number[] = [];
          after.forEach((o, i) => {
            if (rnd() < 0.5) {
              state = apply(state, o);
              kept.push(lastSync + 1 + i);
            }
          });
          const where = `${kind}, cut after call ${k} keeping calls [${kept.join(',')}] since the sync at ${lastSync}`;
          await writeFile(crashed, state);
          const problems = (await checkVhd(crashed)).problems;
          assert.ok(
            problems.every((p) => p.code === 'FD_VHD_FOOTER_MISSING'),
            `${where}: ${JSON.stringify(problems)}`,
          );
          const c = await VhdImage.open(crashed);
          const data = await c.read(0, SIZE);
          await c.close();
          for (let s = 0; s < SIZE / 512; s++) {
            const got = data.subarray(s * 512, (s + 1) * 512);
            const ok = allowed[s]!.some((g) => got.equals(g === 0 ? Buffer.alloc(512) : stamp(s, g)));
            assert.ok(ok, `${where}: sector ${s} holds none of gens ${allowed[s]!.join(',')}`);
          }
        }
      }
    });
  });
}

/**
 * For each sector, the generations it may hold after a cut at call k (0 = never written): the
 * last one whose every call came before the sync at `lastSync`, and every later one started by k.
 */
function allowedGens(writes: ReturnType<typeof plan>, ops: Op[], lastSync: number, k: number): number[][] {
  const lastCall = new Map<number, number>();
  ops.forEach((o, i) => {
    if (o.kind !== 'sync') lastCall.set(o.gen, i);
  });
  const started = k < ops.length ? ops[k]!.gen : GENS;
  const out: number[][] = Array.from({ length: SIZE / 512 }, () => [0]);
  for (const w of writes) {
    if (w.gen > started) break;
    const durable = (lastCall.get(w.gen) ?? -1) < lastSync;
    for (let s = w.sector; s < w.sector + w.count; s++) {
      // A durable write supersedes everything before it.
      if (durable) out[s] = [w.gen];
      else out[s]!.push(w.gen);
    }
  }
  return out;
}
