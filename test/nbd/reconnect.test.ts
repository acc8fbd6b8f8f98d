// The vdisk restart story from design.md: QEMU keeps its NBD connection to vdisk with
// reconnect-delay, so when the vdisk process is replaced (upgrade, crash-restart) QEMU
// reconnects and carries on. qemu-storage-daemon stands in for a VM's QEMU here (same block
// layer and NBD client); it re-exports our disk so qemu-io can drive it from outside.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { waitFor } from '../../src/core/process.js';
import { startNbdServer } from '../../src/disk/nbd/server.js';
import { FileDevice } from './file-device.js';
import { canConnect, qemuIo, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

describe('QEMU reconnects to a restarted vdisk server', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let qsd: ChildProcess | null = null;
  before(async () => ({ dir, cleanup } = await tempDir('fd-nbd-reconnect-')));
  after(async () => {
    qsd?.kill('SIGKILL');
    await cleanup();
  });

  test('writes before and after the restart all land; nothing acknowledged is lost', async () => {
    const file = join(dir, 'disk.raw');
    const vdiskSock = join(dir, 'vdisk.sock');
    const qsdSock = join(dir, 'qsd.sock');
    const dev1 = await FileDevice.create(file, 8 * MiB);
    const s1 = await startNbdServer({ socketPath: vdiskSock, device: dev1 });

    const proc = spawn(
      'qemu-storage-daemon',
      [
        '--blockdev',
        `driver=nbd,node-name=vd,server.type=unix,server.path=${vdiskSock},reconnect-delay=20`,
        '--nbd-server',
        `addr.type=unix,addr.path=${qsdSock}`,
        '--export',
        'type=nbd,id=e0,node-name=vd,name=vd,writable=on',
      ],
      { stdio: 'ignore' },
    );
    qsd = proc;
    await waitFor('qemu-storage-daemon NBD export', async () => ((await canConnect(qsdSock)) ? true : undefined), {
      timeoutMs: 10_000,
    });
    const viaQemu = (cmds: string[]) => qemuIo(qsdSock, cmds, { url: `nbd+unix:///vd?socket=${qsdSock}` });

    await viaQemu(['write -P 0xa1 0 1m', 'flush']);
    assert.equal(s1.clientCount, 1, "QEMU's NBD client is connected to us");

    // Replace the vdisk server: clean close (flush, socket removed), new process-equivalent.
    await s1.close();
    await dev1.close();
    const dev2 = await FileDevice.open(file);
    const s2 = await startNbdServer({ socketPath: vdiskSock, device: dev2 });
    try {
      await viaQemu(['write -P 0xb2 2m 1m', 'flush', 'read -P 0xa1 0 1m', 'read -P 0xb2 2m 1m']);
      assert.equal(s2.clientCount, 1, 'QEMU reconnected to the new server');
      assert.deepEqual(await dev2.read(0, MiB), Buffer.alloc(MiB, 0xa1), 'write before the restart');
      assert.deepEqual(await dev2.read(2 * MiB, MiB), Buffer.alloc(MiB, 0xb2), 'write after the restart');
    } finally {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      qsd = null;
      await s2.close();
      await dev2.close();
    }
  });
});
