/**
 * Which accelerator this host can really use. /dev/kvm existing (even opening) proves little:
 * on nested hosts KVM may run a boot sector yet hang a Linux guest right after its real-mode
 * setup code. So KVM is chosen only when a probe guest really boots under it within a short
 * timeout: first a long-mode boot sector (cheap, catches a dead KVM), then a Linux kernel that
 * must print its banner over an early serial console. Without a kernel to try we say TCG: slow
 * and right beats fast and hung. The verdict is cached per host (keyed by QEMU version and host
 * kernel) in the data dir; FLIGHTDECK_ACCEL=tcg|kvm forces it.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants, existsSync } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/atomic-file.js';
import { FdError, isErrno } from '../core/errors.js';
import { run, sleep } from '../core/process.js';
import type { Accel } from './argv.js';
import { PROBE_OK, writeBootImage } from './boot-sector.js';
import { QEMU_BINARY } from './argv.js';

export interface AccelVerdict {
  accel: Accel;
  reason: string;
  forced: boolean;
  /** ISO time of the probe this verdict came from (undefined when forced). */
  probedAt?: string;
  qemuVersion?: string;
  hostKernel?: string;
}

export interface DetectAccelOptions {
  /** Where the verdict is cached (accel.json). */
  dataDir: string;
  /** A Linux kernel to probe with (e.g. the tiny image's); falls back to /boot/vmlinuz-$(uname -r). */
  kernelPath?: string;
  env?: NodeJS.ProcessEnv;
  /** Per probe boot; a working KVM prints the kernel banner well under a second. */
  timeoutMs?: number;
  /** Ignore a cached verdict. */
  refresh?: boolean;
}

export async function detectAccel(opts: DetectAccelOptions): Promise<AccelVerdict> {
  const env = opts.env ?? process.env;
  const forced = env['FLIGHTDECK_ACCEL'];
  if (forced !== undefined && forced !== '') {
    if (forced !== 'tcg' && forced !== 'kvm')
      throw new FdError('FD_ACCEL_INVALID', `FLIGHTDECK_ACCEL="${forced}" is not an accelerator`, {
        hint: 'set FLIGHTDECK_ACCEL to tcg or kvm, or unset it to probe',
      });
    return { accel: forced, reason: 'forced by FLIGHTDECK_ACCEL', forced: true };
  }
  const cachePath = join(opts.dataDir, 'accel.json');
  const qemuVersion = await qemuVersionString();
  const hostKernel = release();
  if (!opts.refresh) {
    const cached = await readCache(cachePath);
    if (cached && cached.qemuVersion === qemuVersion && cached.hostKernel === hostKernel) return cached;
  }
  const { verdict, cacheable } = await probe(opts);
  const full: AccelVerdict = { ...verdict, forced: false, probedAt: new Date().toISOString(), qemuVersion, hostKernel };
  if (cacheable) await writeFileAtomic(cachePath, JSON.stringify(full, null, 2) + '\n');
  return full;
}

async function probe(
  opts: DetectAccelOptions,
): Promise<{ verdict: Pick<AccelVerdict, 'accel' | 'reason'>; cacheable: boolean }> {
  const timeoutMs = opts.timeoutMs ?? 4000;
  try {
    await access('/dev/kvm', fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EACCES') && !isErrno(err, 'EPERM')) throw err;
    return {
      verdict: { accel: 'tcg', reason: `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code})` },
      cacheable: true,
    };
  }
  if (!(await probeBootSector('kvm', timeoutMs)))
    return {
      verdict: { accel: 'tcg', reason: 'the boot-sector probe did not reach long mode under KVM' },
      cacheable: true,
    };
  const kernel = [opts.kernelPath, `/boot/vmlinuz-${release()}`].find((k): k is string => !!k && existsSync(k));
  if (!kernel)
    return {
      verdict: { accel: 'tcg', reason: 'no Linux kernel to probe with: KVM is not trusted without a real guest boot' },
      cacheable: false,
    };
  if (!(await probeLinuxKernel('kvm', kernel, timeoutMs)))
    return {
      verdict: {
        accel: 'tcg',
        reason: `a Linux kernel (${kernel}) did not print its banner under KVM within ${timeoutMs} ms`,
      },
      cacheable: true,
    };
  return { verdict: { accel: 'kvm', reason: `a Linux kernel booted under KVM (${kernel})` }, cacheable: true };
}

/** Boots the long-mode boot sector; true when it wrote PROBE_OK to the serial port in time. */
export async function probeBootSector(accel: Accel, timeoutMs: number): Promise<boolean> {
  return withProbeDir(async (dir) => {
    const img = await writeBootImage(join(dir, 'probe.img'), 'probe');
    return bootAndWatch(
      accel,
      ['-drive', `file=${img},format=raw,if=virtio`],
      join(dir, 'serial.log'),
      PROBE_OK,
      timeoutMs,
    );
  });
}

/** Boots a Linux kernel with an early serial console; true when its banner appears in time. */
export async function probeLinuxKernel(accel: Accel, kernel: string, timeoutMs: number): Promise<boolean> {
  return withProbeDir((dir) =>
    bootAndWatch(
      accel,
      ['-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1', '-no-reboot'],
      join(dir, 'serial.log'),
      'Linux version',
      timeoutMs,
    ),
  );
}

async function withProbeDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-accel-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function bootAndWatch(
  accel: Accel,
  guest: string[],
  serialLog: string,
  needle: string,
  timeoutMs: number,
): Promise<boolean> {
  const args = [
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-accel',
    accel,
    '-machine',
    'q35',
    '-m',
    '128M',
    '-chardev',
    `file,id=s0,path=${serialLog}`,
    '-serial',
    'chardev:s0',
    ...guest,
  ];
  const child = spawn(QEMU_BINARY, args, { stdio: ['ignore', 'ignore', 'ignore'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.once('error', () => undefined);
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline && child.exitCode === null) {
      const out = await readFile(serialLog, 'latin1').catch((e: unknown) => {
        if (isErrno(e, 'ENOENT')) return '';
        throw e;
      });
      if (out.includes(needle)) return true;
      await sleep(50);
    }
    const out = await readFile(serialLog, 'latin1').catch(() => '');
    return out.includes(needle);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

async function qemuVersionString(): Promise<string> {
  const r = await run(QEMU_BINARY, ['--version']);
  return r.stdout.split('\n')[0]!.trim();
}

async function readCache(path: string): Promise<AccelVerdict | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as AccelVerdict;
    return v.accel === 'kvm' || v.accel === 'tcg' ? v : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || err instanceof SyntaxError) return undefined;
    throw err;
  }
}
