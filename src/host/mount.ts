/**
 * Mounting the filesystem inside a disk image on this host. The chain that works on these
 * machines (design.md): our vdisk NBD server (a detached `flightdeck disk serve`) ->
 * qemu-storage-daemon with a FUSE export of an nbd blockdev -> a loop device -> `mount`.
 * Partitions are found by mount-partitions.ts and given to losetup as --offset/--sizelimit
 * rather than `losetup -P`, which needs partition parsers this kernel may lack.
 * Every piece is recorded in a state file under /run/flightdeck/mounts/<id>/ so unmount can
 * take it down in reverse order, flushing at each step: umount (filesystem to loop), losetup -d
 * (loop to FUSE), qemu-storage-daemon quits (flushes its nbd node: NBD_CMD_FLUSH), then the
 * vdisk process gets SIGTERM (flushes and closes the image).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, open, readFile, readdir, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { basename, join } from 'node:path';
import { writeFileAtomic } from '../core/atomic-file.js';
import { FdError, isErrno } from '../core/errors.js';
import { pidAlive, run, sleep, tail, waitFor } from '../core/process.js';
import { choosePartition, readPartitions } from './mount-partitions.js';

export const DEFAULT_MOUNT_STATE_DIR = '/run/flightdeck/mounts';

export interface MountOptions {
  image: string;
  dir: string;
  /** 1-based partition number; without it: the whole disk, or its only partition. */
  partition?: number;
  readOnly?: boolean;
  /** argv prefix that runs the flightdeck CLI (the CLI layer knows where it lives). */
  cliCommand: string[];
  stateDir?: string;
}

export interface MountState {
  version: 1;
  image: string;
  dir: string;
  readOnly: boolean;
  runDir: string;
  socket: string;
  servePid: number;
  qsdPid: number | null;
  fuseFile: string;
  loopDevice: string | null;
  /** The block device mounted at dir (the loop device, set up over the partition's range). */
  device: string | null;
  partition: number | null;
  mounted: boolean;
}

const stateFile = (runDir: string) => join(runDir, 'state.json');

function runDirFor(stateDir: string, dir: string): string {
  return join(stateDir, createHash('sha256').update(dir).digest('hex').slice(0, 16));
}

async function saveState(s: MountState): Promise<void> {
  await writeFileAtomic(stateFile(s.runDir), JSON.stringify(s, null, 2) + '\n');
}

export async function mountImage(opts: MountOptions): Promise<MountState> {
  const stateDir = opts.stateDir ?? DEFAULT_MOUNT_STATE_DIR;
  const image = await realpath(opts.image).catch((err: unknown) => {
    throw new FdError('FD_DISK_NOT_FOUND', `image ${opts.image} not found`, { cause: err });
  });
  const dir = await realpath(opts.dir).catch((err: unknown) => {
    throw new FdError('FD_MOUNT_DIR_NOT_FOUND', `mount point ${opts.dir} does not exist`, {
      hint: `create it first: mkdir -p ${opts.dir}`,
      cause: err,
    });
  });
  if (!(await stat(dir)).isDirectory()) {
    throw new FdError('FD_MOUNT_DIR_NOT_FOUND', `mount point ${dir} is not a directory`);
  }
  if ((await mountedAt()).has(dir)) {
    throw new FdError('FD_MOUNT_BUSY', `something is already mounted at ${dir}`, {
      hint: `unmount it first (flightdeck disk unmount ${dir})`,
    });
  }
  if (opts.partition !== undefined && (!Number.isInteger(opts.partition) || opts.partition < 1)) {
    throw new FdError('FD_CLI_BAD_ARGS', `partition must be a number from 1 up, not ${opts.partition}`);
  }
  const runDir = runDirFor(stateDir, dir);
  const existing = await loadState(runDir);
  if (existing) {
    throw new FdError('FD_MOUNT_BUSY', `${dir} has a mount record from an earlier mount of ${existing.image}`, {
      hint: `run "flightdeck disk unmount ${dir}" to clear it`,
    });
  }
  await mkdir(runDir, { recursive: true, mode: 0o700 });
  const readOnly = opts.readOnly === true;
  const state: MountState = {
    version: 1,
    image,
    dir,
    readOnly,
    runDir,
    socket: join(runDir, 'nbd.sock'),
    servePid: 0,
    qsdPid: null,
    fuseFile: join(runDir, 'disk'),
    loopDevice: null,
    device: null,
    partition: null,
    mounted: false,
  };
  try {
    state.servePid = await spawnVdisk({
      cliCommand: opts.cliCommand,
      image,
      socket: state.socket,
      readOnly,
      logFile: join(runDir, 'serve.log'),
    });
    await saveState(state);

    await writeFile(state.fuseFile, '');
    const pidFile = join(runDir, 'qsd.pid');
    await run('qemu-storage-daemon', [
      '--blockdev',
      `driver=nbd,node-name=vdisk,server.type=unix,server.path=${state.socket}${readOnly ? ',read-only=on' : ''}`,
      '--export',
      `type=fuse,id=fuse0,node-name=vdisk,mountpoint=${state.fuseFile},writable=${readOnly ? 'off' : 'on'}`,
      '--daemonize',
      '--pidfile',
      pidFile,
    ]);
    state.qsdPid = Number((await readFile(pidFile, 'utf8')).trim());
    await saveState(state);

    const part = choosePartition(await readPartitions(state.fuseFile), opts.partition);
    const loopArgs = ['--find', '--show', ...(readOnly ? ['--read-only'] : [])];
    if (part) loopArgs.push('--offset', String(part.offsetBytes), '--sizelimit', String(part.sizeBytes));
    state.loopDevice = (await run('losetup', [...loopArgs, state.fuseFile])).stdout.trim();
    state.device = state.loopDevice;
    state.partition = part?.number ?? null;
    await saveState(state);

    await run('mount', [...(readOnly ? ['-o', 'ro'] : []), state.device, dir]);
    state.mounted = true;
    await saveState(state);
    return state;
  } catch (err) {
    await teardown(state).catch(() => undefined);
    throw err;
  }
}

export async function unmountImage(dirArg: string, opts: { stateDir?: string } = {}): Promise<MountState> {
  const stateDir = opts.stateDir ?? DEFAULT_MOUNT_STATE_DIR;
  const dir = await realpath(dirArg).catch(() => dirArg);
  const state = await loadState(runDirFor(stateDir, dir));
  if (!state) {
    throw new FdError('FD_MOUNT_NOT_FOUND', `no flightdeck mount at ${dir}`, {
      hint: 'list mounts with: ls /run/flightdeck/mounts/*/state.json',
    });
  }
  await teardown(state);
  return state;
}

/** Mount records on this host (for listing and for cleaning up after a crash). */
export async function listMounts(stateDir = DEFAULT_MOUNT_STATE_DIR): Promise<MountState[]> {
  const names = await readdir(stateDir).catch((err: unknown) => {
    if (isErrno(err, 'ENOENT')) return [] as string[];
    throw err;
  });
  const out: MountState[] = [];
  for (const n of names) {
    const s = await loadState(join(stateDir, n));
    if (s) out.push(s);
  }
  return out;
}

async function loadState(runDir: string): Promise<MountState | null> {
  try {
    return JSON.parse(await readFile(stateFile(runDir), 'utf8')) as MountState;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

/** Takes down whatever the state says is up, in reverse order; safe to repeat. */
async function teardown(state: MountState): Promise<void> {
  if (state.mounted || (await mountedAt()).has(state.dir)) {
    const r = await run('umount', [state.dir], { allowFail: true });
    if (r.code !== 0 && (await mountedAt()).has(state.dir)) {
      throw new FdError('FD_MOUNT_BUSY', `cannot unmount ${state.dir}: ${tail(r.stderr)}`, {
        hint: 'close files and shells using it (fuser -vm DIR), then run unmount again',
      });
    }
    state.mounted = false;
    await saveState(state);
  }
  if (state.loopDevice && (await loopBackingFile(state.loopDevice)) === state.fuseFile) {
    await run('losetup', ['-d', state.loopDevice]);
    // The loop device lets go of the FUSE file asynchronously; wait until it has.
    await waitFor('loop device release', async () => ((await loopBackingFile(state.loopDevice!)) ? undefined : true), {
      timeoutMs: 10_000,
    });
  }
  state.loopDevice = null;
  if (state.qsdPid && processMatches(state.qsdPid, state.socket)) {
    // qemu-storage-daemon flushes its nodes (an NBD flush to vdisk) as it quits.
    await stopProcess(state.qsdPid, 'qemu-storage-daemon');
  }
  if ((await mountedAt()).has(state.fuseFile)) await run('umount', ['-l', state.fuseFile], { allowFail: true });
  state.qsdPid = null;
  if (state.servePid && processMatches(state.servePid, state.socket)) {
    await stopProcess(state.servePid, 'vdisk server');
  }
  await rm(state.runDir, { recursive: true, force: true });
}

async function stopProcess(pid: number, what: string): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch (err) {
    if (isErrno(err, 'ESRCH')) return;
    throw err;
  }
  try {
    await waitFor(`${what} (pid ${pid}) to exit`, () => (pidAlive(pid) && !isZombie(pid) ? undefined : true), {
      timeoutMs: 30_000,
      intervalMs: 20,
    });
  } catch (err) {
    throw new FdError('FD_MOUNT_STUCK', `${what} (pid ${pid}) did not exit after SIGTERM`, {
      hint: 'it may still be flushing; run unmount again, or kill it once the disk is idle',
      cause: err,
    });
  }
}

/** True when /proc/PID/cmdline mentions `needle` (guards against a recycled pid). */
function processMatches(pid: number, needle: string): boolean {
  try {
    // Synchronous read of a tiny procfs file: simpler than threading async through guards.
    return readProcSync(`/proc/${pid}/cmdline`).includes(needle);
  } catch {
    return false;
  }
}

function isZombie(pid: number): boolean {
  try {
    return / Z /.test(readProcSync(`/proc/${pid}/stat`).replace(/^.*\)/, ''));
  } catch {
    return true;
  }
}

function readProcSync(path: string): string {
  return readFileSync(path, 'latin1').replaceAll('\0', ' ');
}

/** Mount points in this mount namespace. */
async function mountedAt(): Promise<Set<string>> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return new Set(text.split('\n').map((l) => unescapeMount(l.split(' ')[4] ?? '')));
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

async function loopBackingFile(loop: string): Promise<string | null> {
  try {
    return (await readFile(`/sys/block/${basename(loop)}/loop/backing_file`, 'utf8')).trim();
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

export interface VdiskSpawnOptions {
  cliCommand: string[];
  image: string;
  socket: string;
  readOnly?: boolean;
  /** stdout and stderr of the detached process go here. */
  logFile: string;
  timeoutMs?: number;
}

/**
 * Starts `flightdeck disk serve` detached (it outlives the caller, like a VM's vdisk process)
 * and resolves with its pid once its socket accepts connections. Fails with the tail of its
 * log when it exits first.
 */
export async function spawnVdisk(o: VdiskSpawnOptions): Promise<number> {
  const log = await open(o.logFile, 'a');
  let exited: { code: number | null; signal: string | null } | null = null;
  let pid: number;
  try {
    const [cmd, ...pre] = o.cliCommand;
    const child = spawn(
      cmd!,
      [...pre, 'disk', 'serve', o.image, '--socket', o.socket, '--json', ...(o.readOnly ? ['--read-only'] : [])],
      { detached: true, stdio: ['ignore', log.fd, log.fd] },
    );
    child.on('exit', (code, signal) => (exited = { code, signal }));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    pid = child.pid!;
    child.unref();
  } finally {
    await log.close();
  }
  try {
    await waitFor(
      'vdisk server socket',
      async () => {
        if (exited) throw new Error('exited');
        return (await canConnect(o.socket)) ? true : undefined;
      },
      { timeoutMs: o.timeoutMs ?? 30_000, intervalMs: 25 },
    );
  } catch (err) {
    if (!exited) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sleep(50);
    const text = await readFile(o.logFile, 'utf8').catch(() => '');
    throw new FdError('FD_VDISK_START_FAILED', `vdisk server for ${o.image} did not start: ${tail(text, 6)}`, {
      hint: 'check that the image opens: flightdeck disk info IMAGE',
      cause: err,
    });
  }
  return pid;
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
