import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import { run } from '../../core/process.js';
import { collectModules, moduleDepends } from './kernel-modules.js';

const fakeModule = (name: string, deps: string[]): Buffer =>
  Buffer.from(`\x7fELF...\0license=GPL\0depends=${deps.join(',')}\0name=${name}\0vermagic=6.1\0`, 'latin1');

test('depends= is read from the module info strings', () => {
  assert.deepEqual(moduleDepends(fakeModule('virtio_net', ['virtio_ring', 'virtio', 'net_failover'])), [
    'virtio_ring',
    'virtio',
    'net_failover',
  ]);
  assert.deepEqual(moduleDepends(fakeModule('failover', [])), []);
});

test('modules come out dependencies first, compressed ones decompressed, built-ins skipped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-kmod-test-'));
  try {
    await mkdir(join(dir, 'kernel/drivers/net'), { recursive: true });
    await writeFile(
      join(dir, 'kernel/drivers/net/virtio_net.ko'),
      fakeModule('virtio_net', ['net_failover', 'virtio']),
    );
    await writeFile(join(dir, 'kernel/drivers/net/net_failover.ko'), fakeModule('net_failover', ['failover']));
    await writeFile(join(dir, 'kernel/drivers/net/failover.ko'), fakeModule('failover', []));
    await writeFile(join(dir, 'kernel/drivers/net/sr_mod.ko'), fakeModule('sr_mod', []));
    await run('xz', [join(dir, 'kernel/drivers/net/failover.ko')]);
    const mods = await collectModules(dir, ['virtio_net', 'sr_mod'], ['virtio_net'], new Set(['virtio']));
    assert.deepEqual(
      mods.map((m) => m.name),
      ['failover', 'net_failover', 'virtio_net', 'sr_mod'],
    );
    assert.deepEqual(mods[0]!.data, fakeModule('failover', []));
    await assert.rejects(collectModules(dir, ['virtio_blk'], ['virtio_blk'], new Set()), (e) =>
      isFdError(e, 'FD_IMAGE_MODULE_MISSING'),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
