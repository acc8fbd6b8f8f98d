/**
 * The peer: plain QEMU live migration between two `qemu-system-x86_64` processes on loopback,
 * driven by QMP `migrate` with QEMU's defaults (its 128 MiB/s bandwidth cap, 300 ms downtime
 * limit, no auto-converge). Same kernel, initrd, command line, machine and memory as ours; the
 * disk is shared storage (both processes open the same raw file), so unlike ours no disk data
 * moves.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { sleep, waitFor } from '../../src/core/process.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { HeartbeatWatch, nowMs } from './heartbeats.js';
import type { CaseResult, GuestImage } from './result.js';
import type { EchoProbe } from './echo.js';
import { dirtyMbOf, settle, observe } from './result.js';

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: { transferred: number; remaining: number; mbps: number; 'dirty-sync-count'?: number };
}

let runs = 0;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** Where a plain QEMU runs: its command prefix (`ip netns exec NS` in the lab) and its NIC. */
export interface PlainPlacement {
  prefix: string[];
  netdev: string[];
}

const USER_NET: PlainPlacement = {
  prefix: [],
  netdev: ['-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0,romfile='],
};

export function plainQemu(
  dir: string,
  name: string,
  img: GuestImage,
  disk: string,
  memoryMiB: number,
  extra: string[],
  at: PlainPlacement = USER_NET,
) {
  const args = [
    '-name',
    name,
    '-nodefaults',
    '-no-user-config',
    '-machine',
    'q35,usb=off',
    '-accel',
    'tcg,thread=multi',
    '-smp',
    '1',
    '-m',
    `${memoryMiB}M`,
    '-display',
    'none',
    '-qmp',
    `unix:${join(dir, `${name}.qmp`)},server=on,wait=off`,
    '-chardev',
    `socket,id=serial0,path=${join(dir, `${name}.serial`)},server=on,wait=off`,
    '-device',
    'isa-serial,chardev=serial0',
    '-kernel',
    img.kernel,
    '-initrd',
    img.initrd,
    '-append',
    img.cmdline,
    '-drive',
    `file=${disk},format=raw,if=virtio,cache=none`,
    ...at.netdev,
    ...extra,
  ];
  const [cmd, ...pre] = [...at.prefix, 'qemu-system-x86_64'];
  const child: ChildProcess = spawn(cmd!, [...pre, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return { child, stderr: () => stderr, qmp: join(dir, `${name}.qmp`), serial: join(dir, `${name}.serial`) };
}

/** In the lab: each QEMU in its host's namespace on the cluster network, a client on a third host. */
export interface PlainLab {
  src: PlainPlacement;
  dst: PlainPlacement;
  /** The target host's address, where its QEMU listens for the migration. */
  listenIp: string;
  echo: EchoProbe;
}

/** One plain-QEMU migration of a freshly booted guest; `disk` is the shared raw file. */
export async function plainCase(
  dir: string,
  label: string,
  img: GuestImage,
  disk: string,
  memoryMiB: number,
  capMs: number,
  lab?: PlainLab,
): Promise<CaseResult> {
  const port = lab ? 47000 + (runs % 1000) : await freePort();
  const listen = lab?.listenIp ?? '127.0.0.1';
  // Socket files of an earlier round stay behind: every run gets its own names.
  const tag = `${label}-${++runs}`;
  const src = plainQemu(dir, `${tag}-src`, img, disk, memoryMiB, [], lab?.src);
  const watch = new HeartbeatWatch();
  let dst: ReturnType<typeof plainQemu> | undefined;
  const qmps: QmpClient[] = [];
  try {
    await watch.attach(src.serial);
    const sq = await QmpClient.connect(src.qmp, { timeoutMs: 30_000 });
    qmps.push(sq);
    await settle(watch, dirtyMbOf(img.cmdline));
    dst = plainQemu(dir, `${tag}-dst`, img, disk, memoryMiB, ['-incoming', `tcp:${listen}:${port}`], lab?.dst);
    const target0 = dst;
    await waitFor(
      'target QMP socket',
      () => {
        if (target0.child.exitCode !== null) throw new Error(`target QEMU exited: ${target0.stderr()}`);
        return existsSync(target0.qmp) ? true : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 10 },
    );
    // The socket file exists a moment before QEMU listens on it: retry a refused connection.
    const dq = await waitFor(
      'target QMP connection',
      () => QmpClient.connect(target0.qmp, { timeoutMs: 30_000 }).catch(() => undefined),
      { timeoutMs: 30_000, intervalMs: 20 },
    );
    qmps.push(dq);
    const target = dst;
    const attached = watch.attach(target.serial);
    await attached;
    const dirtyRate = watch.dirtyRateMiBps();
    const baseline = watch.maxGap(nowMs() - 3000, nowMs()).gapMs;
    const echoing = lab ? await lab.echo.tryStart() : undefined;
    // Round trips before the migration: the baseline of this (shared) machine.
    if (lab) await sleep(3000);
    const t0 = nowMs();
    await sq.execute('migrate', { uri: `tcp:${listen}:${port}` });
    let q: QueryMigrate = {};
    let converged = false;
    for (;;) {
      q = await sq.execute<QueryMigrate>('query-migrate');
      if (q.status === 'completed') {
        converged = true;
        break;
      }
      if (q.status === 'failed') throw new Error(`plain migration failed: ${q['error-desc'] ?? ''}`);
      if (nowMs() - t0 > capMs) {
        await sq.execute('migrate_cancel');
        await waitFor(
          'plain migration cancelled',
          async () => ((await sq.execute<QueryMigrate>('query-migrate')).status === 'cancelled' ? true : undefined),
          { timeoutMs: 30_000, intervalMs: 100 },
        );
        break;
      }
      await sleep(20);
    }
    const wallMs = nowMs() - t0;
    if (converged) {
      // The source reports completion before the target has loaded the last state and started.
      await waitFor(
        'plain target running',
        async () => ((await dq.execute<{ status: string }>('query-status')).status === 'running' ? true : undefined),
        { timeoutMs: 30_000, intervalMs: 10 },
      );
    }
    return await observe(
      watch,
      {
        label,
        converged,
        t0,
        wallMs,
        reportedTotalMs: q['total-time'] ?? null,
        qemuDowntimeMs: q.downtime ?? null,
        ramBytes: q.ram?.transferred ?? null,
        dirtyRateMiBps: dirtyRate,
        baselineGapMs: baseline,
        extra: { dirtyReports: watch.dirty },
      },
      echoing,
    );
  } finally {
    watch.close();
    lab?.echo.close();
    for (const c of qmps) await c.close().catch(() => undefined);
    for (const p of [src, dst]) {
      if (p && p.child.exitCode === null) {
        const exited = new Promise((r) => p.child.once('exit', r));
        p.child.kill('SIGKILL');
        await exited;
      }
    }
  }
}
