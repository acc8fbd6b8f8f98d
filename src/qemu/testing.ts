/**
 * Helpers for tests of the QEMU layer: a cheap real QEMU peer (`-machine none`, or a boot-sector
 * guest) in a temp dir, always killed and removed by `dispose`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../core/process.js';
import { existsSync } from 'node:fs';

export interface TestQemu {
  dir: string;
  qmpPath: string;
  child: ChildProcess;
  stderr(): string;
  dispose(): Promise<void>;
}

export async function startTestQemu(extraArgs: string[] = ['-machine', 'none']): Promise<TestQemu> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-qemu-'));
  const qmpPath = join(dir, 'qmp.sock');
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-nodefaults',
      '-no-user-config',
      '-display',
      'none',
      '-accel',
      'tcg',
      '-qmp',
      `unix:${qmpPath},server=on,wait=off`,
      ...extraArgs,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor('QMP socket', () => (existsSync(qmpPath) || child.exitCode !== null ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 20,
  });
  if (child.exitCode !== null) throw new Error(`test qemu exited: ${err}`);
  return {
    dir,
    qmpPath,
    child,
    stderr: () => err,
    async dispose() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
