import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFdError } from '../core/errors.js';
import { run } from '../core/process.js';
import { DirectoryPool } from './storage-pool.js';

test('a directory pool creates, lists, grows and deletes VHD volumes that qemu-img reads', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-pool-'));
  try {
    const pool = new DirectoryPool({ dataDir });
    assert.equal(pool.path, join(dataDir, 'pools', 'default'));
    const v = await pool.create('root', { sizeBytes: 64 << 20 });
    assert.equal(v.type, 'dynamic');
    assert.equal(v.sizeBytes, 64 << 20);
    assert.ok(v.fileBytes < 1 << 20, 'dynamic: no space taken up front');
    const qi = JSON.parse((await run('qemu-img', ['info', '--output=json', '-f', 'vpc', v.path])).stdout) as {
      'virtual-size': number;
    };
    assert.equal(qi['virtual-size'], 64 << 20);
    await assert.rejects(pool.create('root', { sizeBytes: 1 << 20 }), (e) => isFdError(e, 'FD_POOL_VOLUME_EXISTS'));

    const grown = await pool.resize('root', 128 << 20);
    assert.equal(grown.sizeBytes, 128 << 20);

    const child = await pool.createChild('vm1-root', 'root');
    assert.equal(child.type, 'differencing');
    assert.equal(child.parent, v.path);
    assert.deepEqual(
      (await pool.list()).map((x) => x.name),
      ['root', 'vm1-root'],
    );
    await assert.rejects(pool.delete('root'), (e) => isFdError(e, 'FD_POOL_VOLUME_BUSY') && /vm1-root/.test(e.message));

    // a volume held open (as by a running VM's vdisk) cannot be resized or deleted
    const fh = await open(child.path, 'r');
    try {
      await assert.rejects(pool.delete('vm1-root'), (e) => isFdError(e, 'FD_POOL_VOLUME_BUSY'));
    } finally {
      await fh.close();
    }
    await pool.delete('vm1-root');
    await pool.delete('root');
    assert.deepEqual(await pool.list(), []);
    await assert.rejects(pool.get('root'), (e) => isFdError(e, 'FD_POOL_VOLUME_NOT_FOUND'));
    await assert.rejects(pool.create('../escape', { sizeBytes: 1 << 20 }), (e) => isFdError(e, 'FD_BAD_NAME'));
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
