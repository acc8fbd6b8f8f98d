/**
 * SIGKILL the writer at random points, many times: the image must open, pass check, and hold
 * for every sector either its old or its new data, with every acknowledged write present.
 * The same for merge: a killed merge leaves a chain that reads the same, and a rerun finishes it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB } from '../../src/core/units.js';
import { sleep } from '../../src/core/process.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { mergeVhd } from '../../src/disk/vhd/merge.js';
import { plan, stamp } from './crash-plan.js';
import { pattern, qemuImg, repoRoot, withTempDir } from './helpers.js';

const ROUNDS = Number(process.env['FD_CRASH_ROUNDS'] ?? 30);
const GENS = 160;
const SIZE = 12 * MiB;

/**
 * Starts a node child, waits for "ready" (or for "done AFTER" when given, so kills land at every
 * stage of the run however fast the machine is), kills it after delayMs more; returns the last
 * "done N" it printed.
 */
async function runAndKill(
  script: string,
  args: string[],
  delayMs: number,
  afterDone?: number,
): Promise<{ lastDone: number; exited: boolean }> {
  const child = spawn(process.execPath, [join(repoRoot(), 'dist', 'test', 'disk', script), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString();
    if (afterDone === undefined ? out.includes('ready\n') : out.includes(`done ${afterDone}\n`)) ready();
  });
  const exitP = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await Promise.race([readyP, exitP]);
  await sleep(delayMs);
  const exited = child.exitCode !== null;
  child.kill('SIGKILL');
  await exitP;
  const done = [...out.matchAll(/done (\d+)\n/g)].map((m) => Number(m[1]));
  return { lastDone: done.length ? done[done.length - 1]! : 0, exited };
}

test(`SIGKILL of a writer ${ROUNDS} times: every sector old or new, acknowledged writes kept`, async () => {
  await withTempDir(async (dir) => {
    const parentPath = join(dir, 'base.vhd');
    await createVhd(parentPath, { sizeBytes: SIZE });
    const base = pattern(SIZE, 99);
    const p = await VhdImage.open(parentPath, { write: true });
    await p.write(0, base);
    await p.close();
    let killedMidway = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const differencing = round % 2 === 1;
      const path = join(dir, `r${round}.vhd`);
      if (differencing) await createDifferencingVhd(path, parentPath);
      // Small blocks in the dynamic case so many allocations are in flight when the kill lands.
      else await createVhd(path, { sizeBytes: SIZE, blockSizeBytes: round % 4 === 0 ? 64 * 1024 : 2 * MiB });
      // Every fourth image starts with leftovers of an earlier crash: garbage past its footer, so
      // new blocks land on non-zero bytes and a misordered BAT update would expose them.
      const leftovers = round % 4 === 3;
      if (leftovers) await appendFile(path, pattern(3 * MiB, round));
      const seed = 1000 + round;
      // Kill right after a pseudo-random acknowledged write, spread over the whole run.
      const after = 1 + Math.floor((((round * 7919) % 1000) / 1000) * (GENS - 20));
      const { lastDone, exited } = await runAndKill(
        'crash-writer.js',
        [path, String(seed), String(GENS)],
        round % 3,
        after,
      );
      if (!exited) killedMidway++;
      if (process.env['FD_CRASH_VERBOSE']) process.stdout.write(`# round ${round}: killed after write ${lastDone}\n`);
      const writes = plan(seed, GENS, SIZE / 512);
      let problems = (await checkVhd(path)).problems;
      if (leftovers && problems.length) {
        // Killed before the first new block: the trailing footer is still the garbage we appended.
        assert.deepEqual(
          problems.map((p) => p.code),
          ['FD_VHD_FOOTER_MISSING'],
          `round ${round}`,
        );
        problems = (await checkVhd(path, { repair: true })).problems;
      }
      assert.deepEqual(problems, [], `round ${round}: check is clean`);
      const img = await VhdImage.open(path);
      const data = await img.read(0, SIZE);
      await img.close();
      // Expected per sector: the last acknowledged generation, or (if it covers it) the one in flight.
      const lastAck = new Int32Array(SIZE / 512);
      const inFlight = writes[lastDone];
      for (const w of writes.slice(0, lastDone)) lastAck.fill(w.gen, w.sector, w.sector + w.count);
      for (let s = 0; s < SIZE / 512; s++) {
        const got = data.subarray(s * 512, (s + 1) * 512);
        const old = lastAck[s]
          ? stamp(s, lastAck[s]!)
          : differencing
            ? base.subarray(s * 512, (s + 1) * 512)
            : Buffer.alloc(512);
        if (got.equals(old)) continue;
        const covered = inFlight && s >= inFlight.sector && s < inFlight.sector + inFlight.count;
        assert.ok(
          covered && got.equals(stamp(s, inFlight.gen)),
          `round ${round} (${differencing ? 'differencing' : 'dynamic'}), sector ${s}: neither old (gen ${lastAck[s]}) nor new data; last acknowledged gen ${lastDone}`,
        );
      }
      if (round === 0 || round === 2) {
        // QEMU's vpc driver must read the same bytes from a dynamic image we crashed mid-write.
        const raw = join(dir, `r${round}.raw`);
        await qemuImg('convert', '-f', 'vpc', '-O', 'raw', path, raw);
        assert.ok((await readFile(raw)).equals(data), `round ${round}: qemu-img reads what we read`);
      }
    }
    assert.ok(killedMidway >= ROUNDS / 2, `most writers were killed mid-way (${killedMidway}/${ROUNDS})`);
  });
});

test('SIGKILL during merge: the chain still reads the same, and merge run again completes it', async () => {
  await withTempDir(async (dir) => {
    const parentPath = join(dir, 'base.vhd');
    const size = 64 * MiB;
    await createVhd(parentPath, { sizeBytes: size });
    const p = await VhdImage.open(parentPath, { write: true });
    await p.write(0, pattern(size / 2, 1));
    await p.close();
    const childPath = join(dir, 'child.vhd');
    await createDifferencingVhd(childPath, parentPath);
    const c = await VhdImage.open(childPath, { write: true });
    for (let off = 0; off < size - 2 * MiB; off += 3 * MiB) await c.write(off + 4096, pattern(MiB, off));
    await c.close();
    const chainBefore = await VhdImage.open(childPath);
    const expect = await chainBefore.read(0, size);
    await chainBefore.close();
    let resumed = false;
    for (const delay of [20, 60, 120]) {
      const childExists = await access(childPath).then(
        () => true,
        () => false,
      );
      if (!childExists) break;
      await runAndKill('merge-runner.js', [childPath], delay);
      if (
        await access(childPath).then(
          () => true,
          () => false,
        )
      ) {
        const chain = await VhdImage.open(childPath);
        assert.ok((await chain.read(0, size)).equals(expect), `after a kill at ${delay} ms the chain reads as before`);
        await chain.close();
        resumed = true;
      }
    }
    if (
      await access(childPath).then(
        () => true,
        () => false,
      )
    )
      await mergeVhd(childPath);
    const merged = await VhdImage.open(parentPath);
    assert.ok((await merged.read(0, size)).equals(expect), 'the parent holds what the chain showed');
    await merged.close();
    assert.deepEqual((await checkVhd(parentPath)).problems, []);
    assert.ok(resumed, 'at least one kill landed before the merge finished');
  });
});
