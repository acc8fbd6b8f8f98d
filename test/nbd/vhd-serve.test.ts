// VHDs served by `flightdeck disk serve` (the real CLI, as the VM runner starts it) and written
// by QEMU over NBD. Every write is replayed on a plain raw file with the same qemu-io commands;
// afterwards the VHD must equal that raw file through QEMU's own vpc driver, pass our check,
// and read the same through our engine.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';
import { openDisk } from '../../src/disk/open.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';
import { checkVhd } from '../../src/disk/vhd/check.js';
import type { ServeReady, ServeStopped } from '../../src/cli/commands/disk-serve.js';
import { qemuImg, qemuIo, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const mainJs = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** Runs `flightdeck disk serve --json` and resolves with its ready object and a stopper. */
async function serveCli(
  image: string,
  socket: string,
  extra: string[] = [],
): Promise<{ ready: ServeReady; stop: (sig?: NodeJS.Signals) => Promise<{ code: number | null; out: string[] }> }> {
  const child = spawn(process.execPath, [mainJs, 'disk', 'serve', image, '--socket', socket, '--json', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b));
  const lines: string[] = [];
  const rl = createInterface({ input: child.stdout });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await new Promise<ServeReady>((resolve, reject) => {
    rl.on('line', (l) => {
      lines.push(l);
      if (lines.length === 1) resolve(JSON.parse(l) as ServeReady);
    });
    void exited.then((code) =>
      reject(new Error(`disk serve exited (${code}) before ready: ${Buffer.concat(stderr).toString()}`)),
    );
  });
  return {
    ready,
    stop: async (sig = 'SIGTERM') => {
      child.kill(sig);
      const code = await exited;
      return { code, out: lines.slice(1) };
    },
  };
}

describe('flightdeck disk serve with a VHD', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir('fd-vhd-serve-')));
  after(async () => cleanup());

  const writes = [
    'write -P 0x11 0 64k',
    'write -P 0x22 2047k 2k', // straddles the first 2 MiB block boundary
    'write -f -P 0x33 5m 512', // FUA
    'write -P 0x44 9m 3m',
    'write -z 10m 512k', // zeroes inside allocated data
    'write -P 0x55 63m 1m', // last block
    'flush',
  ];

  test('QEMU writes through our server land in the VHD: qemu-img compare -f vpc against a raw replay', async () => {
    const vhd = join(dir, 'disk.vhd');
    const ref = join(dir, 'ref.raw');
    await createVhd(vhd, { sizeBytes: 64 * MiB });
    await run('truncate', ['-s', String(64 * MiB), ref]);
    await run('qemu-io', ['-f', 'raw', ...writes.flatMap((c) => ['-c', c]), ref]);

    const socket = join(dir, 'disk.sock');
    const { ready, stop } = await serveCli(vhd, socket);
    assert.equal(ready.event, 'ready');
    assert.equal(ready.sizeBytes, 64 * MiB);
    assert.equal(ready.socket, socket);
    await qemuIo(socket, writes);
    // Reads through the server, including holes (never-written blocks) and the zeroed range.
    await qemuIo(socket, ['read -P 0x44 9m 1m', 'read -P 0 10m 512k', 'read -P 0 20m 4m', 'read -P 0x22 2047k 2k']);
    await qemuImg(['compare', '-f', 'raw', '-F', 'raw', `nbd+unix:///?socket=${socket}`, ref]);
    const { code, out } = await stop('SIGTERM');
    assert.equal(code, 0, 'SIGTERM is a clean exit');
    assert.equal((JSON.parse(out.join('\n')) as ServeStopped).signal, 'SIGTERM');
    await assert.rejects(stat(socket), /ENOENT/, 'the socket is removed on exit');

    await qemuImg(['compare', '-f', 'vpc', '-F', 'raw', vhd, ref]);
    const check = await checkVhd(vhd);
    assert.deepEqual(check.problems, [], 'disk check finds nothing wrong');
    const dev = await openDisk(vhd);
    try {
      assert.deepEqual(await dev.read(2047 * 1024, 2048), Buffer.alloc(2048, 0x22));
    } finally {
      await dev.close();
    }
  });

  test('a differencing child served read-write keeps its parent untouched and reads through to it', async () => {
    const parent = join(dir, 'parent.vhd');
    const child = join(dir, 'child.vhd');
    await createVhd(parent, { sizeBytes: 16 * MiB });
    const psock = join(dir, 'parent.sock');
    const p = await serveCli(parent, psock);
    await qemuIo(psock, ['write -P 0x61 0 4m', 'write -P 0x62 8m 1m']);
    assert.equal((await p.stop('SIGINT')).code, 0, 'SIGINT is a clean exit too');
    const parentBefore = await run('sha256sum', [parent]);
    await createDifferencingVhd(child, parent);

    const csock = join(dir, 'child.sock');
    const c = await serveCli(child, csock);
    await qemuIo(csock, ['write -P 0x71 1m 4k', 'write -P 0x72 8m 512']);
    await qemuIo(csock, [
      'read -P 0x61 0 1m', // from the parent
      'read -P 0x71 1m 4k', // from the child
      'read -P 0x61 1028k 1m', // rest of the parent's data in the same block
      'read -P 0x72 8m 512', // child sector
      'read -P 0x62 8389120 4k', // 8m+512: parent sectors beside it (sector bitmap)
      'read -P 0 12m 1m',
    ]);
    const map = (await qemuImg(['map', '--output=json', '-f', 'raw', `nbd+unix:///?socket=${csock}`])).stdout;
    assert.match(map, /"data": true/, 'BLOCK_STATUS reports the allocated ranges of the chain');
    assert.equal((await c.stop()).code, 0);
    assert.equal((await run('sha256sum', [parent])).stdout, parentBefore.stdout, 'parent unchanged');
    assert.deepEqual((await checkVhd(child)).problems, []);
  });

  test('--read-only serves reads and QEMU cannot write', async () => {
    const vhd = join(dir, 'ro.vhd');
    await createVhd(vhd, { sizeBytes: 8 * MiB });
    const socket = join(dir, 'ro.sock');
    const s = await serveCli(vhd, socket, ['--read-only']);
    assert.equal(s.ready.readOnly, true);
    const out = await qemuIo(socket, ['write -P 1 0 4k'], { allowFail: true });
    assert.match(out, /Permission denied|read-only|not permitted/i);
    await qemuIo(socket, ['read -P 0 0 4k'], { readOnly: true });
    assert.equal((await s.stop()).code, 0);
  });

  test('a missing image is a clear error and no socket is left behind', async () => {
    const socket = join(dir, 'missing.sock');
    const res = await run(process.execPath, [mainJs, 'disk', 'serve', join(dir, 'nope.vhd'), '--socket', socket], {
      allowFail: true,
    });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /FD_DISK_NOT_FOUND/);
    await assert.rejects(stat(socket), /ENOENT/);
  });
});
