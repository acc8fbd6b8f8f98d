/**
 * Boots the tiny image under plain qemu-system-x86_64 (TCG) for tests, until the VM runner
 * exists: serial console on stdio, read through ProbeParser, every event stamped with the host
 * time it arrived. The guest always boots a private copy of the disk so the cache stays clean.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProbeWatcher, type EventOf, type StampedEvent, type WaitOptions } from '../../src/host/images/probe-watch.js';
import type { ProbeEvent } from '../../src/host/images/probes.js';
import { withProbes, type TinyImage } from '../../src/host/images/tiny.js';

export type Stamped = StampedEvent;

export interface TinyGuest {
  child: ChildProcess;
  watch: ProbeWatcher;
  events: Stamped[];
  console(): string;
  /** The first event (after `from`) that matches; rejects with the console tail if QEMU exits or time runs out. */
  waitFor<K extends ProbeEvent['kind']>(kind: K, opts?: WaitOptions<K>): Promise<EventOf<K>>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<number | null>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

export async function privateDisk(image: TinyImage): Promise<{ dir: string; disk: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-tiny-'));
  const disk = join(dir, 'disk.vhd');
  await copyFile(image.disk, disk);
  return { dir, disk };
}

export function bootTiny(
  image: TinyImage,
  disk: string,
  opts: {
    machine?: string;
    extraArgs?: string[];
    hostfwdPort?: number;
    append?: string;
    /** Ask for the console probes (default); false boots the quiet demo console. */
    probes?: boolean;
  } = {},
): TinyGuest {
  const net = opts.hostfwdPort
    ? [
        '-netdev',
        `user,id=n0,hostfwd=tcp:127.0.0.1:${opts.hostfwdPort}-:${image.echoPort}`,
        '-device',
        'virtio-net-pci,netdev=n0,romfile=',
      ]
    : [];
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      opts.machine ?? 'pc',
      '-accel',
      'tcg',
      '-m',
      '256',
      '-nographic',
      '-no-reboot',
      '-kernel',
      image.kernel,
      '-initrd',
      image.initrd,
      '-append',
      `${(opts.probes === false ? image : withProbes(image)).cmdline}${opts.append ? ' ' + opts.append : ''}`,
      '-drive',
      `file=${disk},format=vpc,if=virtio`,
      ...net,
      ...(opts.extraArgs ?? []),
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const watch = new ProbeWatcher(child.stdout!);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const consoleText = (): string => `${watch.consoleTail().slice(-3000)}\n[qemu stderr] ${stderr}`;
  return {
    child,
    watch,
    events: watch.events,
    console: consoleText,
    exited,
    async waitFor(kind, o) {
      try {
        return await watch.waitFor(kind, o);
      } catch (err) {
        throw new Error(`${(err as Error).message}; console:\n${consoleText()}`, { cause: err });
      }
    },
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** Sends bytes to the guest's echo service and resolves with what comes back. */
export function echoRoundTrip(port: number, payload: Buffer, timeoutMs = 30_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let n = 0;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`echo: ${n} of ${payload.length} bytes back within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= payload.length) {
        clearTimeout(timer);
        sock.end();
        resolve(Buffer.concat(got));
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

export async function cleanup(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
