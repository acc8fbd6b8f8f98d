/**
 * The peer: a cold boot of the same tiny guest as a plain `qemu-system-x86_64` started by hand
 * on this machine, from spawn to its first heartbeat line. The QEMU arguments are those of
 * bench/vm-start's plain contender (q35, TCG multi-threaded, direct kernel boot with the image's
 * kernel, initrd and command line, a raw copy of its disk on virtio-blk, serial to a file); that
 * file runs its benchmark when imported, so the arguments are repeated here. The heartbeat is
 * read the way the failover side reads it (SerialTail, same polling), so both carry the same
 * measuring error.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { run, waitFor } from '../../src/core/process.js';
import { SerialTail } from './serial-tail.js';

export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
  /** The image's VHD; each boot gets a fresh raw copy. */
  disk: string;
}

let boots = 0;

/** ms from spawning QEMU to the guest's first heartbeat on its serial log. */
export async function plainColdBootMs(dir: string, img: GuestImage, memoryMiB: number): Promise<number> {
  const n = ++boots;
  const disk = join(dir, `plain-${n}.raw`);
  const serial = join(dir, `plain-${n}.serial`);
  await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img.disk, disk]);
  const tail = new SerialTail(serial);
  const t0 = Date.now();
  const q = spawn(
    'qemu-system-x86_64',
    [
      '-nodefaults',
      '-no-user-config',
      '-machine',
      'q35',
      '-accel',
      'tcg,thread=multi',
      '-m',
      `${memoryMiB}M`,
      '-display',
      'none',
      '-kernel',
      img.kernel,
      '-initrd',
      img.initrd,
      '-append',
      img.cmdline,
      '-chardev',
      `file,id=s0,path=${serial}`,
      '-device',
      'isa-serial,chardev=s0',
      '-blockdev',
      JSON.stringify({ driver: 'raw', 'node-name': 'root', file: { driver: 'file', filename: disk } }),
      '-device',
      'virtio-blk-pci,drive=root',
      '-netdev',
      'user,id=n0',
      '-device',
      'virtio-net-pci,netdev=n0,mac=52:54:00:fd:b0:09,romfile=',
    ],
    { stdio: 'ignore' },
  );
  const exited = new Promise((r) => q.once('exit', r));
  tail.start();
  try {
    const at = await waitFor(
      'plain QEMU guest heartbeat',
      () => {
        if (q.exitCode !== null) throw new Error(`plain QEMU exited with ${q.exitCode}`);
        return tail.firstHeartbeatAt ?? undefined;
      },
      { timeoutMs: 180_000, intervalMs: 5 },
    );
    return at - t0;
  } finally {
    await tail.stop();
    q.kill('SIGKILL');
    await exited;
  }
}
