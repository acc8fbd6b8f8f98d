/**
 * A VM's run dir: `<runDir>/<name>/`, everything a runner needs to find, reattach to or clean
 * up a VM after its own death. `vm.json` records what was started (spec, process identities,
 * taps, vdisk sockets); `intent.json` is written atomically before each step of a start or stop,
 * so a runner killed mid-step leaves a note of exactly what may be half done; `exit.json` keeps
 * the last exit (reason, QEMU stderr tail) after the processes are gone.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tempPathFor } from '../core/atomic-file.js';
import { isErrno } from '../core/errors.js';
import { vmRunPaths, type VmRunPaths } from '../qemu/run-paths.js';
import type { Accel } from '../qemu/argv.js';
import type { VmSpec } from '../qemu/spec.js';
import type { ProcIdentity } from './pidfile.js';
import type { VmCgroup } from './confine/cgroups.js';
import type { VmUsers } from './confine/vm-users.js';

/** One VHD disk served by the VM's vdisk process. */
export interface VdiskExportRecord {
  diskId: string;
  image: string;
  socketPath: string;
  exportName: string;
  readOnly: boolean;
}

export interface TapRecord {
  nicId: string;
  tap: string;
  bridge: string;
}

export interface ConfineRecord extends VmUsers {
  cgroup?: VmCgroup;
}

/** What was started for a VM: enough for a different runner process to take it over. */
export interface VmRecord {
  spec: VmSpec;
  accel: Accel;
  runAs?: string;
  /** The VM's own users and cgroup (host/confine), when QEMU runs confined. */
  confine?: ConfineRecord;
  argv?: string[];
  qemu?: ProcIdentity;
  /** The one vdisk process serving every VHD disk of the VM (absent when it has none). */
  vdisk?: ProcIdentity;
  vdiskExports: VdiskExportRecord[];
  taps: TapRecord[];
  startedAt: string;
  /** Restarts by the restart policy since the last start by a caller. */
  restarts: number;
}

export type StartStep = 'prepare' | 'vdisk' | 'taps' | 'qemu' | 'qmp' | 'done';
export type StopStep = 'qemu' | 'cleanup' | 'done';

export type Intent =
  { op: 'start'; step: StartStep; at: string } | { op: 'stop'; step: StopStep; reason: ExitReason; at: string };

export type ExitReason =
  /** Stopped by a caller (shutdown, stop). */
  | 'stopped'
  /** The guest powered itself off. */
  | 'guest-shutdown'
  /** QEMU died without being asked: crash, OOM kill, kill from outside. */
  | 'crashed'
  /** QEMU failed to come up. */
  | 'start-failed'
  /** A runner died in the middle of starting this VM; the next one rolled it back. */
  | 'start-interrupted';

export interface ExitRecord {
  reason: ExitReason;
  at: string;
  pid?: number;
  exitCode?: number | null;
  signal?: string | null;
  /** Last lines QEMU wrote to stderr. */
  stderrTail: string;
  /** True when the runner was not running at the time and found out on reattach. */
  noticedLate?: boolean;
}

export interface VmDir extends VmRunPaths {
  name: string;
  record: string;
  intent: string;
  exit: string;
  vdiskSocket(diskId: string): string;
  vdiskLog: string;
  vdiskConfig: string;
}

export function vmDir(runDir: string, name: string): VmDir {
  const dir = join(runDir, name);
  // A VM still running from before QEMU got its own q/ keeps its flat run dir until it stops.
  const flat = !existsSync(join(dir, 'q')) && existsSync(join(dir, 'vm.json'));
  const paths = vmRunPaths(dir, flat ? 'flat' : 'split');
  return {
    ...paths,
    name,
    record: join(dir, 'vm.json'),
    intent: join(dir, 'intent.json'),
    exit: join(dir, 'exit.json'),
    vdiskSocket: (id) => join(paths.qemuDir, `vdisk-${id}.sock`),
    vdiskLog: join(dir, 'vdisk.log'),
    vdiskConfig: join(dir, 'vdisk.json'),
  };
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

export const readRecord = (d: VmDir): Promise<VmRecord | undefined> => readJson<VmRecord>(d.record);
export const readIntent = (d: VmDir): Promise<Intent | undefined> => readJson<Intent>(d.intent);
export const readExit = (d: VmDir): Promise<ExitRecord | undefined> => readJson<ExitRecord>(d.exit);

/**
 * Replaces a run-dir file atomically (temp + rename) without fsync: these files must survive the
 * runner being killed, which the page cache does; a power loss takes the VMs down with them, and
 * the run dir normally lives on tmpfs anyway. Skipping fsync keeps a start's many steps cheap.
 */
async function replaceFile(path: string, text: string): Promise<void> {
  const tmp = tempPathFor(path);
  await writeFile(tmp, text, { mode: 0o600 }); // whatever the umask: only root reads a run dir's records
  await rename(tmp, path);
}

export const writeRecord = (d: VmDir, r: VmRecord): Promise<void> =>
  replaceFile(d.record, JSON.stringify(r, null, 2) + '\n');
export const writeIntent = (d: VmDir, i: Intent): Promise<void> => replaceFile(d.intent, JSON.stringify(i) + '\n');
export const writeExit = (d: VmDir, e: ExitRecord): Promise<void> =>
  replaceFile(d.exit, JSON.stringify(e, null, 2) + '\n');

/** Names of every VM with a run dir. */
export async function listVmDirs(runDir: string): Promise<string[]> {
  try {
    const ents = await readdir(runDir, { withFileTypes: true });
    return ents
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
}

/** Removes what only a running VM needs; keeps exit.json, qemu.log and serial.log for inspection. */
export async function clearRuntime(d: VmDir, record: VmRecord | undefined): Promise<void> {
  const files = [d.qmp, d.serial, d.vnc, d.pidfile, d.vdiskConfig, d.record, d.intent];
  for (const v of record?.vdiskExports ?? []) files.push(v.socketPath);
  // Kernel and initrd copies a confined QEMU booted from (host/confine/qemu-files.ts).
  const copies = await readdir(d.qemuDir).catch(() => [] as string[]);
  for (const n of copies) if (/^(kernel|initrd)-/.test(n)) files.push(join(d.qemuDir, n));
  for (const f of files) {
    await unlink(f).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });
  }
}

export async function removeVmDir(d: VmDir): Promise<void> {
  await rm(d.dir, { recursive: true, force: true });
}
