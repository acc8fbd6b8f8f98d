import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../core/process.js';
import { S_IFREG, entriesFromTree, writeCpio } from './cpio.js';

test('GNU cpio extracts what we write: files, modes, symlinks, nested dirs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-cpio-test-'));
  try {
    const src = join(dir, 'src');
    await mkdir(join(src, 'bin/deep'), { recursive: true });
    await writeFile(join(src, 'bin/tool'), 'binary\0data', { mode: 0o755 });
    await writeFile(join(src, 'bin/deep/odd'), 'x'); // 1 byte: exercises padding
    await symlink('tool', join(src, 'bin/sh'));
    const entries = await entriesFromTree(src);
    entries.push({ name: 'extra', mode: S_IFREG | 0o600, data: Buffer.from('abc') });
    const archive = writeCpio(entries, 1704067200);
    await writeFile(join(dir, 'a.cpio'), archive);
    const out = join(dir, 'out');
    await mkdir(out);
    await run('sh', ['-c', `cpio -id --quiet < ${join(dir, 'a.cpio')}`], { cwd: out });
    assert.equal(await readFile(join(out, 'bin/tool'), 'utf8'), 'binary\0data');
    assert.equal((await lstat(join(out, 'bin/tool'))).mode & 0o777, 0o755);
    assert.equal(await readFile(join(out, 'bin/deep/odd'), 'utf8'), 'x');
    assert.equal(await readlink(join(out, 'bin/sh')), 'tool');
    assert.equal(await readFile(join(out, 'extra'), 'utf8'), 'abc');
    // Same entries in another order, same bytes: the archive does not depend on readdir order.
    assert.deepEqual(writeCpio([...entries].reverse(), 1704067200), archive);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
