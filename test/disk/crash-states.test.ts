/**
 * Every crash point, exhaustively: we record each write the engine makes to the image file
 * (the real pwrite/pwritev/ftruncate calls, through FileHandle) while it runs a series of
 * writes, then rebuild the file as it would be after a crash following each prefix of those
 * calls and check it: it opens, `check` finds nothing it cannot repair, and every sector holds
 * its old or its new data. Unlike the SIGKILL test this hits the few-microsecond windows between
 * the data, bitmap, BAT and footer updates every time, so a misordering cannot slip through.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { plan, stamp, stamps } from './crash-plan.js';
import { apply, recording } from './file-ops.js';
import { pattern, withTempDir } from './helpers.js';

const SIZE = 2 * 1024 * 1024;
const GENS = 40;

for (const kind of ['dynamic', 'dynamic-with-leftovers', 'differencing'] as const) {
  test(`every crash point of ${GENS} writes to a ${kind} image leaves old or new data`, async () => {
    await withTempDir(async (dir) => {
      const base = join(dir, 'base.vhd');
      await createVhd(base, { sizeBytes: SIZE, blockSizeBytes: 64 * 1024 });
      const b = await VhdImage.open(base, { write: true });
      const baseData = pattern(SIZE, 5);
      await b.write(0, baseData);
      await b.close();
      const path = join(dir, 'img.vhd');
      if (kind === 'differencing') await createDifferencingVhd(path, base);
      else await createVhd(path, { sizeBytes: SIZE, blockSizeBytes: 64 * 1024 });
      if (kind === 'dynamic-with-leftovers') await appendFile(path, pattern(SIZE, 9));
      const initial = await readFile(path);
      const writes = plan(77, GENS, SIZE / 512).map((w) => ({ ...w, count: Math.min(w.count, 300) }));
      let gen = 0;
      const img = await VhdImage.open(path, { write: true });
      const recorded = await recording(
        () => img.handle.fd,
        () => gen,
        async () => {
          for (const w of writes) {
            gen = w.gen;
            await img.write(w.sector * 512, stamps(w));
          }
          gen = GENS + 1;
          await img.flush();
        },
      );
      await img.close();
      // A sync changes no bytes; in-order prefixes need only the writes (power-cut.test.ts uses the syncs).
      const ops = recorded.filter((o) => o.kind !== 'sync');
      assert.ok(ops.length > GENS, `recorded ${ops.length} writes`);
      const crashed = join(dir, 'crashed.vhd');
      let state: Buffer = initial;
      for (let k = 0; k <= ops.length; k++) {
        if (k > 0) state = apply(state, ops[k - 1]!);
        // Writes of generations before the one in flight are complete.
        const inFlight = k < ops.length ? ops[k]!.gen : GENS + 1;
        const prefixDone = ops.slice(0, k).filter((o) => o.gen === inFlight).length > 0;
        await writeFile(crashed, state);
        const problems = (await checkVhd(crashed)).problems;
        assert.ok(
          problems.every((p) => p.code === 'FD_VHD_FOOTER_MISSING'),
          `${kind}, crash after write call ${k}: ${JSON.stringify(problems)}`,
        );
        const c = await VhdImage.open(crashed);
        const data = await c.read(0, SIZE);
        await c.close();
        const last = new Int32Array(SIZE / 512);
        for (const w of writes) if (w.gen < inFlight) last.fill(w.gen, w.sector, w.sector + w.count);
        const cur = writes[inFlight - 1];
        for (let s = 0; s < SIZE / 512; s++) {
          const got = data.subarray(s * 512, (s + 1) * 512);
          const old = last[s]
            ? stamp(s, last[s]!)
            : kind === 'differencing'
              ? baseData.subarray(s * 512, (s + 1) * 512)
              : Buffer.alloc(512);
          if (got.equals(old)) continue;
          const covered = cur && prefixDone && s >= cur.sector && s < cur.sector + cur.count;
          assert.ok(
            covered && got.equals(stamp(s, cur.gen)),
            `${kind}, crash after write call ${k} (gen ${inFlight} in flight): sector ${s} is neither old nor new`,
          );
        }
      }
      // The image after all of it, repaired if need be, reads the final data.
      await copyFile(path, crashed);
      assert.deepEqual((await checkVhd(crashed)).problems, []);
    });
  });
}
