/**
 * The vdisk process of a VM (vdisk-main.js): our NBD server for all of its VHD disks, started
 * detached so it outlives the runner, its output in vdisk.log in the VM's run dir. QEMU connects
 * to one unix socket per disk; `reconnect-delay` on QEMU's side covers a vdisk restart.
 */
import { spawn } from 'node:child_process';
import { chown, open, readFile, unlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { FdError, isErrno } from '../core/errors.js';
import { sleep, tail } from '../core/process.js';
import { identify, isRunning, terminate, type ProcIdentity } from './pidfile.js';
import type { VdiskConfig } from './vdisk-main.js';

export interface StartVdiskOptions {
  exports: VdiskConfig['exports'];
  configPath: string;
  logPath: string;
  /** Owner for the sockets, so QEMU running as an unprivileged user can reconnect to them. */
  socketOwner?: { uid: number; gid: number };
  /** The user the vdisk becomes once its files are open (see VdiskConfig.dropTo). */
  dropTo?: VdiskConfig['dropTo'];
  timeoutMs?: number;
  onSpawn?: (proc: ProcIdentity) => Promise<void>;
}

export const VDISK_MAIN = fileURLToPath(new URL('./vdisk-main.js', import.meta.url));

export async function startVdisk(o: StartVdiskOptions): Promise<ProcIdentity> {
  for (const e of o.exports) {
    if (e.tcp) continue;
    await unlink(e.socketPath).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
  await writeFile(
    o.configPath,
    JSON.stringify({ exports: o.exports, ...(o.dropTo ? { dropTo: o.dropTo } : {}) } satisfies VdiskConfig, null, 2) +
      '\n',
    { mode: 0o600 },
  );
  const log = await open(o.logPath, 'a', 0o600);
  let exited: { code: number | null; signal: string | null } | undefined;
  let child;
  try {
    child = spawn(process.execPath, [VDISK_MAIN, o.configPath], { detached: true, stdio: ['ignore', log.fd, log.fd] });
  } finally {
    await log.close();
  }
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', () => (exited = { code: null, signal: null }));
  child.unref();
  const id = child.pid === undefined ? undefined : identify(child.pid);
  if (!id) throw await startFailed(o, 'exited at once');
  await o.onSpawn?.(id);
  const deadline = Date.now() + (o.timeoutMs ?? 15_000);
  for (const e of o.exports) {
    for (;;) {
      if (exited || !isRunning(id)) throw await startFailed(o, `exited (${exited?.code ?? exited?.signal ?? '?'})`);
      if (await canConnect(e.tcp ?? { path: e.socketPath })) break;
      if (Date.now() > deadline) {
        await terminate(id, 1000);
        throw await startFailed(o, 'did not open its sockets in time');
      }
      await sleep(20);
    }
    if (o.socketOwner && !e.tcp) await chown(e.socketPath, o.socketOwner.uid, o.socketOwner.gid);
  }
  return id;
}

function canConnect(to: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(to);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function startFailed(o: StartVdiskOptions, what: string): Promise<FdError> {
  const log = await readFile(o.logPath, 'utf8').catch(() => '');
  return new FdError(
    'FD_VDISK_START_FAILED',
    `vdisk for ${o.exports.map((e) => e.image).join(', ')} ${what}: ${tail(log, 6)}`,
    { hint: 'check that the image opens: flightdeck disk info IMAGE' },
  );
}

/** Stops a vdisk process: SIGTERM lets it flush and close the chains; SIGKILL if it hangs. */
export async function stopVdisk(id: ProcIdentity, graceMs = 10_000): Promise<void> {
  await terminate(id, graceMs);
}
