/**
 * Shared pieces of the VM integration tests: temp host dirs, a runner forced to TCG, guests
 * read through their serial log, and a cleanup that leaves no QEMU or vdisk behind.
 */
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { waitFor } from '../../src/core/process.js';
import { VmRunner, type VmEvent, type VmRunnerOptions } from '../../src/host/runner.js';
import { findProcessesMentioning } from '../../src/host/proc-scan.js';
import { signalIdentity, waitGone } from '../../src/host/pidfile.js';
import { heartbeatCounts, writeBootImage } from '../../src/qemu/boot-sector.js';
import type { VmSpecInput } from '../../src/qemu/spec.js';

export interface TestHost {
  root: string;
  runDir: string;
  dataDir: string;
  /** A fresh runner on this host's dirs; the previous one (if any) is closed first, as on a daemon restart. */
  runner(extra?: Partial<VmRunnerOptions>): Promise<VmRunner>;
  /** Closes every runner made here (VMs keep running), e.g. before another process takes over. */
  closeRunners(): Promise<void>;
  dispose(): Promise<void>;
}

export async function testHost(): Promise<TestHost> {
  const root = await mkdtemp(join(tmpdir(), 'fd-vm-'));
  // searchable by others, so the runner really drops QEMU to `nobody`
  await chmod(root, 0o755);
  const runDir = join(root, 'run');
  const dataDir = join(root, 'data');
  const runners: VmRunner[] = [];
  return {
    root,
    runDir,
    dataDir,
    async runner(extra = {}) {
      for (const old of runners) await old.close();
      const r = new VmRunner({ runDir, dataDir, accel: 'tcg', ...extra });
      runners.push(r);
      return r;
    },
    async closeRunners() {
      for (const r of runners) await r.close();
    },
    async dispose() {
      for (const r of runners) await r.close().catch(() => undefined);
      for (const p of await findProcessesMentioning(root + '/')) {
        signalIdentity(p, 'SIGKILL');
        await waitGone(p, 5000);
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}

export async function heartbeatSpec(
  host: TestHost,
  name: string,
  extra: Partial<VmSpecInput> = {},
): Promise<VmSpecInput> {
  const img = await writeBootImage(join(host.root, `${name}-boot.raw`), 'heartbeat');
  return {
    name,
    uuid: randomUUID(),
    memoryBytes: 32 << 20,
    disks: [{ id: 'boot', source: { kind: 'raw', path: img } }],
    ...extra,
  };
}

export async function serialText(runner: VmRunner, name: string): Promise<string> {
  return readFile(runner.paths(name).serialLog, 'latin1').catch(() => '');
}

/** The boot-sector guest's heartbeat counter as last printed. */
export async function lastHeartbeat(runner: VmRunner, name: string): Promise<number | undefined> {
  return heartbeatCounts(await serialText(runner, name)).at(-1);
}

/** Waits until the heartbeat counter passes `above` and returns it. */
export function heartbeatAbove(runner: VmRunner, name: string, above: number, timeoutMs = 30_000): Promise<number> {
  return waitFor(
    `${name} heartbeat above ${above}`,
    async () => {
      const n = await lastHeartbeat(runner, name);
      return n !== undefined && n > above ? n : undefined;
    },
    { timeoutMs, intervalMs: 50 },
  );
}

export function nextEvent(runner: VmRunner, pred: (e: VmEvent) => boolean, timeoutMs = 30_000): Promise<VmEvent> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      runner.off('event', on);
      reject(new Error(`no matching VM event within ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (e: VmEvent): void => {
      if (!pred(e)) return;
      clearTimeout(t);
      runner.off('event', on);
      resolve(e);
    };
    runner.on('event', on);
  });
}
