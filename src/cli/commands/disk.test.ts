import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import type { ProgressSnapshot } from '../../core/progress.js';
import { fixture, qemuVirtualSize, withTempDir } from '../../../test/disk/helpers.js';
import type { CliContext, CommandDef } from '../command.js';
import { diskCommands } from './disk.js';

function ctx(progress: ProgressSnapshot[] = []): CliContext {
  return {
    json: true,
    progress: () => (p) => progress.push(p),
    say: () => undefined,
    env: {},
    global: {},
    signal: new AbortController().signal,
  };
}

async function cli(
  verb: string,
  args: Record<string, string>,
  opts: Record<string, string | boolean> = {},
  progress?: ProgressSnapshot[],
) {
  const cmd = diskCommands.find((c) => c.verb === verb) as CommandDef;
  const result = await cmd.run(ctx(progress), { args, opts, rest: [] });
  return {
    result: result as Record<string, unknown>,
    exit: cmd.exitCode ? cmd.exitCode(result) : 0,
    text: cmd.render?.(result),
  };
}

test('disk create / info / check / convert / resize / compact / merge through the command definitions', async () => {
  await withTempDir(async (dir) => {
    const a = join(dir, 'a.vhd');
    await cli('create', { path: a }, { size: '64M' });
    const info = (await cli('info', { path: a })).result;
    assert.equal(info['format'], 'vhd');
    assert.equal(info['type'], 'dynamic');
    assert.equal(info['virtualSize'], 64 * 1024 * 1024);
    assert.equal(info['blockSize'], 2 * 1024 * 1024);
    assert.equal(info['creatorApp'], 'win');
    assert.equal(info['parent'], null);
    assert.deepEqual(info['chain'], [a]);
    const c = join(dir, 'c.vhd');
    await cli('create', { path: c }, { parent: a });
    const ci = (await cli('info', { path: c })).result;
    assert.equal(ci['type'], 'differencing');
    assert.equal(ci['parent'], a);
    assert.deepEqual(ci['chain'], [c, a]);
    assert.equal((await cli('check', { path: c })).exit, 0);
    const az = join(dir, 'az.vhd');
    await cli('create', { path: az }, { size: '10000000', azure: true });
    assert.equal(await qemuVirtualSize(az), 10 * 1024 * 1024);
    const progress: ProgressSnapshot[] = [];
    const q = join(dir, 'a.qcow2');
    await cli('convert', { src: a, dst: q }, { to: 'qcow2' }, progress);
    assert.equal((await cli('info', { path: q })).result['format'], 'qcow2');
    const r = join(dir, 'a.raw');
    await cli('convert', { src: c, dst: r }, { to: 'raw' }, progress);
    assert.ok(progress.length > 0 && progress.at(-1)!.done === progress.at(-1)!.total, 'progress reported to the end');
    await cli('resize', { path: a }, { size: '128M' });
    assert.equal(await qemuVirtualSize(a), 128 * 1024 * 1024);
    await cli('compact', { path: a });
    const m = (await cli('merge', { child: c })).result;
    assert.equal(m['parent'], a);
    await assert.rejects(cli('convert', { src: a, dst: join(dir, 'x') }, { to: 'vmdk' }), (e) =>
      isFdError(e, 'FD_CLI_BAD_ARGS'),
    );
    await assert.rejects(cli('create', { path: join(dir, 'y.vhd') }, {}), (e) => isFdError(e, 'FD_CLI_BAD_ARGS'));
  });
});

test('disk check exits 1 with coded problems, and 0 after --repair', async () => {
  await withTempDir(async (dir) => {
    const p = join(dir, 'image.vhd');
    await copyFile(fixture('image.vhd'), p);
    await chmod(p, 0o644);
    const bad = await cli('check', { path: p });
    assert.equal(bad.exit, 1);
    const problems = bad.result['problems'] as Array<{ code: string; message: string }>;
    assert.ok(problems.length > 0 && problems.every((x) => x.code.startsWith('FD_VHD_') && x.message));
    assert.match(bad.text!, /FD_VHD_BAD_CHECKSUM/);
    assert.equal((await cli('check', { path: p }, { repair: true })).exit, 0);
    assert.equal((await cli('check', { path: p })).exit, 0);
  });
});
