/**
 * Boots a tiny image once under plain QEMU (TCG, no VM runner) and reports how long it took:
 * the setup's proof that the image works on this host, and the reference number for boot
 * time. Boots a throwaway copy of the disk; the cached image is never written.
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import { ProbeParser } from './probes.js';
import { withProbes, type TinyImage } from './tiny.js';

export interface BootCheckResult {
  machine: string;
  /** Host time from spawning QEMU to the first heartbeat line. */
  firstHeartbeatMs: number;
  /** Host time from spawning QEMU to FD-READY. */
  readyMs: number;
  /** Guest CLOCK_MONOTONIC at the first heartbeat: time since the kernel started. */
  guestFirstHeartbeatS: number;
  guestReadyUptimeS: number;
  /**
   * CPU time QEMU had used by the first heartbeat: TCG boot is CPU-bound, so this is close to
   * the boot time on an idle host and, unlike wall time, barely moves when the host is busy.
   */
  qemuCpuMsAtFirstHeartbeat: number;
}

/** utime + stime of a process, in ms (Linux USER_HZ is 100 on every platform we run on). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

export async function bootCheck(
  image: Pick<TinyImage, 'kernel' | 'initrd' | 'disk' | 'cmdline'>,
  opts: { machine?: 'pc' | 'q35'; timeoutMs?: number } = {},
): Promise<BootCheckResult> {
  const machine = opts.machine ?? 'q35';
  const dir = await mkdtemp(join(tmpdir(), 'fd-tiny-check-'));
  try {
    const disk = join(dir, 'disk.vhd');
    await copyFile(image.disk, disk);
    const started = performance.now();
    const child = spawn(
      'qemu-system-x86_64',
      [
        ...['-M', machine, '-accel', 'tcg', '-m', '256', '-nodefaults', '-no-user-config', '-display', 'none'],
        ...['-serial', 'stdio', '-no-reboot', '-kernel', image.kernel, '-initrd', image.initrd],
        ...['-append', withProbes(image).cmdline, '-drive', `file=${disk},format=vpc,if=virtio`],
        ...['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,romfile='],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const parser = new ProbeParser();
    try {
      return await new Promise<BootCheckResult>((resolve, reject) => {
        let first: { ms: number; guestS: number; cpu: Promise<number> } | undefined;
        const timer = setTimeout(
          () =>
            reject(
              new FdError(
                'FD_IMAGE_BOOT_FAILED',
                `tiny image did not report FD-READY within ${opts.timeoutMs ?? 60_000} ms`,
              ),
            ),
          opts.timeoutMs ?? 60_000,
        );
        child.stdout.on('data', (chunk: Buffer) => {
          const now = performance.now() - started;
          for (const e of parser.push(chunk)) {
            if (e.kind === 'heartbeat' && !first)
              first = { ms: now, guestS: Number(e.monotonicNs) / 1e9, cpu: cpuMs(child.pid!).catch(() => NaN) };
            if (e.kind === 'ready' && first) {
              clearTimeout(timer);
              const f = first;
              void f.cpu.then(
                (cpu) =>
                  resolve({
                    machine,
                    firstHeartbeatMs: Math.round(f.ms),
                    readyMs: Math.round(now),
                    guestFirstHeartbeatS: Math.round(f.guestS * 100) / 100,
                    guestReadyUptimeS: e.uptimeS,
                    qemuCpuMsAtFirstHeartbeat: cpu,
                  }),
                reject,
              );
            }
          }
        });
        child.on('exit', (code) => {
          clearTimeout(timer);
          reject(
            new FdError(
              'FD_IMAGE_BOOT_FAILED',
              `QEMU exited (${code}) before the tiny image was ready: ${stderr.trim()}`,
            ),
          );
        });
      });
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await gone;
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
