/**
 * The VM runner of one host: turns a VmSpec into running processes (vdisk first, then QEMU,
 * both detached) and back. It remembers nothing that matters: a VM's state comes from QMP, its
 * processes from the run dir, so a runner can be killed at any moment and the next one reattaches
 * (same QEMU pid, the guest never notices) or repairs what a half-done step left.
 *
 * Crash safety: before each step of a start or stop, `intent.json` is written atomically and
 * `vm.json` lists every resource the step may create (vdisk sockets, taps) before it is created.
 * A runner that finds an unfinished start rolls it back (or adopts the VM if QEMU is up and
 * answering); an unfinished stop is completed. Orphans whose pid never reached vm.json are found
 * by scanning for processes that name the VM's run dir.
 *
 * A QEMU that dies is noticed within a second (QMP socket close, plus a 200 ms pid poll), recorded
 * in exit.json with the tail of its stderr, and the restart policy decides what happens next.
 */
import { EventEmitter } from 'node:events';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, open, readFile, rename, unlink, chmod } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FdError, isErrno, isFdError } from '../core/errors.js';
import { silentLogger, type Logger } from '../core/log.js';
import { sleep } from '../core/process.js';
import { detectAccel } from '../qemu/accel.js';
import { buildQemuArgv, type Accel, type NbdExport } from '../qemu/argv.js';
import { qemuIds } from '../qemu/nodes.js';
import { QmpClient, type QmpEvent } from '../qemu/qmp.js';
import { parseVmSpec, type VmSpec } from '../qemu/spec.js';
import { identify, isRunning, signalIdentity, terminate, waitGone, type ProcIdentity } from './pidfile.js';
import { findProcessesMentioning } from './proc-scan.js';
import { launchQemu, qemuStderrTail } from './qemu-process.js';
import {
  clearRuntime,
  listVmDirs,
  readExit,
  readIntent,
  readRecord,
  removeVmDir,
  vmDir,
  writeExit,
  writeIntent,
  writeRecord,
  type ExitReason,
  type ExitRecord,
  type Intent,
  type VmDir,
  type VmRecord,
} from './run-dir.js';
import { tinyImagePaths } from './images/tiny.js';
import { createTap, deleteTap, tapName } from './tap.js';
import { startVdisk, stopVdisk } from './vdisk-process.js';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS_TEMPLATE = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export type VmState =
  /** QEMU runs the guest. */
  | 'running'
  /** Paused by a caller (or by QEMU on an I/O error): vCPUs stopped, memory kept. */
  | 'paused'
  /** QEMU is up but not running the guest for another reason (migration, shutdown in progress). */
  | 'transient'
  /** QEMU is alive but its QMP did not answer in time. */
  | 'unresponsive'
  /** No QEMU; the last exit was asked for or was the guest powering off. */
  | 'stopped'
  /** No QEMU; the last exit was a crash or a failed start. */
  | 'crashed';

export interface VmStatus {
  name: string;
  state: VmState;
  /** QEMU's own word from query-status (running, paused, inmigrate, ...), when it answered. */
  qemuStatus?: string;
  pid?: number;
  /** The VM's vdisk process (serving its VHD disks), if it has one. */
  vdiskPid?: number;
  accel?: Accel;
  startedAt?: string;
  restarts: number;
  lastExit?: ExitRecord;
  spec?: VmSpec;
}

export type VmEventType =
  | 'started'
  | 'reattached'
  | 'stopped'
  | 'guest-shutdown'
  | 'crashed'
  | 'died-while-away'
  | 'start-failed'
  | 'repaired'
  | 'restarting'
  | 'restart-failed'
  /** A restart by policy was not allowed now (the host lost its cluster lease); the agent decides later. */
  | 'restart-held'
  | 'paused'
  | 'resumed'
  | 'reset'
  | 'powerdown'
  | 'media-changed'
  /** The vdisk process died under a running VM and was started again (QEMU's NBD client reconnects). */
  | 'vdisk-restarted'
  /** Any other QMP event (BLOCK_JOB_*, MIGRATION, DEVICE_TRAY_MOVED, ...), name in detail.event. */
  | 'qmp';

export interface VmEvent {
  vm: string;
  type: VmEventType;
  at: string;
  detail?: Record<string, unknown>;
}

export interface VmRunnerOptions {
  /** Persistent data (accelerator verdict, UEFI variable stores). */
  dataDir: string;
  /** Runtime state: one dir per VM with sockets, pidfiles, logs (e.g. /run/flightdeck/vms). */
  runDir: string;
  log?: Logger;
  /** Force an accelerator instead of probing (FLIGHTDECK_ACCEL also forces). */
  accel?: Accel;
  /** A Linux kernel for the accelerator probe; default: the cached tiny image's, if any. */
  probeKernel?: string;
  /**
   * Unprivileged user QEMU runs as. 'auto' (default): `nobody` when we are root and that user
   * can reach the run dir, else our own user. null: never switch.
   */
  qemuUser?: string | null | 'auto';
  /** Restarts allowed within `restartWindowMs` before the policy gives up (default 5 in 10 min). */
  maxRestarts?: number;
  restartWindowMs?: number;
  /** Test hook: called at each crash-safety point of start and stop (e.g. to SIGKILL ourselves). */
  faultPoint?: (point: string) => void | Promise<void>;
}

export interface ShutdownResult {
  /** True when the guest powered off by itself within the timeout. */
  graceful: boolean;
}

export interface ReattachResult {
  name: string;
  outcome: 'attached' | 'died-while-away' | 'start-rolled-back' | 'start-adopted' | 'stop-completed' | 'stopped';
}

interface Attached {
  name: string;
  dir: VmDir;
  record: VmRecord;
  qmp: QmpClient;
  child?: ChildProcess;
  childExit?: { code: number | null; signal: NodeJS.Signals | null };
  poll: NodeJS.Timeout;
  /** Set by an operation that is about to make QEMU exit: the monitor then leaves cleanup to it. */
  expectingExit?: ExitReason;
  guestShutdown?: boolean;
  lastShutdownReason?: string;
  gone: Promise<void>;
  markGone: () => void;
  handled: boolean;
}

/**
 * Events: `event` (VmEvent) for everything that happens to a VM; `error` is never emitted.
 */
export class VmRunner extends EventEmitter {
  private readonly log: Logger;
  private readonly attached = new Map<string, Attached>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly restartTimes = new Map<string, number[]>();
  private readonly pendingRestarts = new Map<string, NodeJS.Timeout>();
  private restartGate: ((name: string) => Promise<boolean>) | undefined;

  /**
   * Asked before each restart by policy. A clustered host must not restart a guarded VM while
   * it may have lost that VM to another host (its fence keeper just killed it for that reason).
   */
  setRestartGate(gate: (name: string) => Promise<boolean>): void {
    this.restartGate = gate;
  }
  private accelVerdict: Promise<Accel> | undefined;
  private runAsResolved: { user: string; uid: number; gid: number } | null | undefined;
  private ready: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly opts: VmRunnerOptions) {
    super();
    this.log = opts.log ?? silentLogger;
  }

  // ---- lifecycle of the runner itself ----

  /** Finds every VM in the run dir: attaches to live ones, repairs half-done steps, notes deaths. */
  async reattachAll(): Promise<ReattachResult[]> {
    await this.init();
    const out: ReattachResult[] = [];
    for (const name of await listVmDirs(this.opts.runDir)) {
      if (this.attached.has(name)) continue;
      out.push({ name, outcome: await this.withLock(name, () => this.reattachOne(name)) });
    }
    return out;
  }

  /** Stops watching every VM; their processes keep running for the next runner. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.pendingRestarts.values()) clearTimeout(t);
    this.pendingRestarts.clear();
    await Promise.allSettled([...this.locks.values()]);
    for (const att of [...this.attached.values()]) await this.detach(att);
    if (this.ready) await unlink(join(this.opts.runDir, '.runner.lock')).catch(() => undefined);
  }

  // ---- operations ----

  /** Validates the spec (nothing starts on a bad one), then starts vdisk(s), taps and QEMU. */
  async start(input: unknown): Promise<VmStatus> {
    const spec = parseVmSpec(input);
    await this.init();
    await this.withLock(spec.name, () => this.startLocked(spec, 0));
    return this.status(spec.name);
  }

  /**
   * Starts the target side of a live migration: the same processes as start(), but QEMU waits
   * for an incoming migration (`-incoming defer`) and stays paused after it (`-S`), so the
   * caller decides when the guest runs here (after the source has stopped: one running copy).
   */
  async startIncoming(input: unknown): Promise<VmStatus> {
    const spec = parseVmSpec(input);
    await this.init();
    await this.withLock(spec.name, () => this.startLocked(spec, 0, ['-incoming', 'defer', '-S']));
    return this.status(spec.name);
  }

  /** ACPI power button, then a force stop if the guest is not off within `timeoutMs`. */
  async shutdown(name: string, opts: { timeoutMs?: number } = {}): Promise<ShutdownResult> {
    return this.withLock(name, async () => {
      if (this.cancelRestart(name) && !this.attached.has(name)) return { graceful: true }; // down, awaiting restart
      const att = this.mustBeAttached(name);
      await this.beginStop(att, 'stopped');
      try {
        await att.qmp.execute('system_powerdown', undefined, { timeoutMs: 5000 });
      } catch (err) {
        if (!isFdError(err, 'FD_QMP_CLOSED')) throw err;
      }
      const graceful = await this.waitExit(att, opts.timeoutMs ?? 60_000);
      if (!graceful) await this.forceExit(att);
      await this.finishStop(att, 'stopped');
      return { graceful };
    });
  }

  /** Force stop: QEMU quits at once (no guest involvement); SIGKILL if it does not. */
  async stop(name: string): Promise<void> {
    await this.withLock(name, async () => {
      if (this.cancelRestart(name) && !this.attached.has(name)) return; // down, awaiting restart: stays down
      const att = this.mustBeAttached(name);
      await this.beginStop(att, 'stopped');
      await this.forceExit(att);
      await this.finishStop(att, 'stopped');
    });
  }

  async pause(name: string): Promise<void> {
    await this.withLock(name, () => this.mustBeAttached(name).qmp.execute('stop'));
  }

  async resume(name: string): Promise<void> {
    await this.withLock(name, () => this.mustBeAttached(name).qmp.execute('cont'));
  }

  /** Hard reset, like the reset button: the guest gets no say. */
  async reset(name: string): Promise<void> {
    await this.withLock(name, () => this.mustBeAttached(name).qmp.execute('system_reset'));
  }

  /**
   * Reboot: asks the guest (Ctrl-Alt-Del) and waits for it to reset; a guest that does not within
   * `timeoutMs` gets a hard reset. Resolves with how it went.
   */
  async reboot(name: string, opts: { timeoutMs?: number } = {}): Promise<{ graceful: boolean }> {
    return this.withLock(name, async () => {
      const att = this.mustBeAttached(name);
      const reset = att.qmp.waitEvent('RESET', { timeoutMs: opts.timeoutMs ?? 30_000 });
      reset.catch(() => undefined);
      await att.qmp.execute('send-key', {
        keys: [
          { type: 'qcode', data: 'ctrl' },
          { type: 'qcode', data: 'alt' },
          { type: 'qcode', data: 'delete' },
        ],
      });
      try {
        await reset;
        return { graceful: true };
      } catch (err) {
        if (!isFdError(err, 'FD_QMP_TIMEOUT')) throw err;
        await att.qmp.execute('system_reset');
        return { graceful: false };
      }
    });
  }

  /**
   * Puts an ISO in a CD-ROM drive (or empties it with null) while the VM runs. With QEMU running
   * as an unprivileged user the ISO must be readable by that user.
   */
  async changeMedia(name: string, cdromId: string, iso: string | null): Promise<void> {
    await this.withLock(name, async () => {
      const att = this.mustBeAttached(name);
      const cd = att.record.spec.cdroms.find((c) => c.id === cdromId);
      if (!cd)
        throw new FdError('FD_VM_DEVICE_NOT_FOUND', `VM ${name} has no CD-ROM drive "${cdromId}"`, {
          hint: `drives: ${att.record.spec.cdroms.map((c) => c.id).join(', ') || 'none'}`,
        });
      const id = qemuIds.cdromDevice(cdromId);
      if (iso === null) {
        await att.qmp.execute('eject', { id, force: true });
      } else {
        if (!existsSync(iso)) throw new FdError('FD_VM_MEDIA_NOT_FOUND', `ISO ${iso} does not exist`);
        await att.qmp.execute('blockdev-change-medium', {
          id,
          filename: iso,
          format: 'raw',
          'read-only-mode': 'read-only',
        });
      }
      cd.iso = iso;
      await writeRecord(att.dir, att.record);
      this.emitVm(name, 'media-changed', { cdrom: cdromId, iso });
    });
  }

  /** State read from QMP now, never from memory; a VM with no QEMU reports its last exit. */
  async status(name: string): Promise<VmStatus> {
    const att = this.attached.get(name);
    const d = vmDir(this.opts.runDir, name);
    if (att) {
      const base = {
        name,
        pid: att.record.qemu?.pid,
        vdiskPid: att.record.vdisk?.pid,
        accel: att.record.accel,
        startedAt: att.record.startedAt,
        restarts: att.record.restarts,
        spec: att.record.spec,
      };
      try {
        const s = await att.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: 3000 });
        const state: VmState =
          s.status === 'running'
            ? 'running'
            : s.status === 'paused' || s.status === 'io-error'
              ? 'paused'
              : 'transient';
        return { ...base, state, qemuStatus: s.status };
      } catch (err) {
        if (isFdError(err, 'FD_QMP_TIMEOUT')) return { ...base, state: 'unresponsive' };
        if (isFdError(err, 'FD_QMP_CLOSED')) return { ...base, state: 'transient' };
        throw err;
      }
    }
    const [record, lastExit] = await Promise.all([readRecord(d), readExit(d)]);
    if (!record && !lastExit && !existsSync(d.dir))
      throw new FdError('FD_VM_NOT_FOUND', `no VM named ${name} on this host`);
    const crashed = lastExit && (lastExit.reason === 'crashed' || lastExit.reason === 'start-failed');
    return {
      name,
      state: crashed ? 'crashed' : 'stopped',
      restarts: record?.restarts ?? 0,
      ...(lastExit ? { lastExit } : {}),
      ...(record ? { spec: record.spec } : {}),
    };
  }

  async list(): Promise<VmStatus[]> {
    const names = new Set([...(await listVmDirs(this.opts.runDir)), ...this.attached.keys()]);
    return Promise.all([...names].sort().map((n) => this.status(n)));
  }

  /** The live QMP connection of a running VM, for helpers that drive QEMU directly (migration). */
  qmp(name: string): QmpClient {
    return this.mustBeAttached(name).qmp;
  }

  /** Forgets a stopped VM: removes its run dir (logs included). */
  async remove(name: string): Promise<void> {
    await this.withLock(name, async () => {
      if (this.attached.has(name))
        throw new FdError('FD_VM_RUNNING_CONFLICT', `VM ${name} is running`, { hint: 'stop it first' });
      this.cancelRestart(name);
      await removeVmDir(vmDir(this.opts.runDir, name));
    });
  }

  /** Where a VM's sockets and logs are (serial.log, qemu.log, qmp.sock, vnc.sock, serial.sock). */
  paths(name: string): VmDir {
    return vmDir(this.opts.runDir, name);
  }

  // ---- start ----

  private async startLocked(spec: VmSpec, restarts: number, extraArgs: string[] = []): Promise<void> {
    const name = spec.name;
    if (this.attached.has(name))
      throw new FdError('FD_VM_ALREADY_RUNNING', `VM ${name} is already running`, { status: 409 });
    const d = vmDir(this.opts.runDir, name);
    const prev = await readRecord(d);
    if (prev?.qemu && isRunning(prev.qemu))
      throw new FdError('FD_VM_ALREADY_RUNNING', `VM ${name} has a QEMU running (pid ${prev.qemu.pid})`, {
        hint: 'another runner owns it, or call reattachAll() first',
        status: 409,
      });
    const accel = await this.accel();
    const runAs = this.runAs();
    await mkdir(d.dir, { recursive: true });
    await chmod(d.dir, 0o711); // QEMU as an unprivileged user must reach its vdisk sockets
    await unlink(d.exit).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT')) throw err;
    });

    const record: VmRecord = {
      spec,
      accel,
      ...(runAs ? { runAs: runAs.user } : {}),
      vdiskExports: spec.disks
        .filter((x) => x.source.kind === 'vhd')
        .map((x) => ({
          diskId: x.id,
          image: x.source.path,
          socketPath: d.vdiskSocket(x.id),
          exportName: x.id,
          readOnly: x.readOnly,
        })),
      taps: spec.nics.flatMap((n) =>
        n.network.kind === 'bridge' ? [{ nicId: n.id, tap: tapName(spec.uuid, n.id), bridge: n.network.bridge }] : [],
      ),
      startedAt: new Date().toISOString(),
      restarts,
    };
    const t0 = Date.now();
    const step = async (s: Extract<Intent, { op: 'start' }>['step']): Promise<void> => {
      this.log.debug('start step', { vm: name, step: s, elapsedMs: Date.now() - t0 });
      await writeIntent(d, { op: 'start', step: s, at: new Date().toISOString() });
      await this.opts.faultPoint?.(`start:${s}`);
    };
    let launched: Awaited<ReturnType<typeof launchQemu>> | undefined;
    try {
      await step('prepare');
      await writeRecord(d, record);

      await step('vdisk');
      if (record.vdiskExports.length) {
        await startVdisk({
          exports: record.vdiskExports.map(({ image, socketPath, exportName, readOnly }) => ({
            image,
            socketPath,
            exportName,
            readOnly,
          })),
          configPath: d.vdiskConfig,
          logPath: d.vdiskLog,
          ...(runAs ? { socketOwner: { uid: runAs.uid, gid: runAs.gid } } : {}),
          onSpawn: async (proc) => {
            record.vdisk = proc;
            await writeRecord(d, record);
          },
        });
      }

      await step('taps');
      for (const t of record.taps) await createTap(t.tap, t.bridge);

      await step('qemu');
      const nbd: Record<string, NbdExport> = {};
      for (const v of record.vdiskExports) nbd[v.diskId] = { socketPath: v.socketPath, exportName: v.exportName };
      const taps = Object.fromEntries(record.taps.map((t) => [t.nicId, t.tap]));
      let uefi: { codePath: string; varsPath: string } | undefined;
      if (spec.firmware === 'uefi') uefi = { codePath: OVMF_CODE, varsPath: await this.uefiVars(spec) };
      record.argv = buildQemuArgv(spec, {
        paths: d,
        accel,
        nbd,
        taps,
        ...(runAs ? { runAs: runAs.user } : {}),
        ...(uefi ? { uefi } : {}),
      });
      record.argv.push(...extraArgs);
      await writeRecord(d, record);
      launched = await launchQemu(record.argv, d, {
        onSpawn: async (proc) => {
          await this.opts.faultPoint?.('start:qemu-spawned'); // pid not yet recorded: only the scan finds it
          record.qemu = proc;
          await writeRecord(d, record);
        },
      });

      await step('qmp');
      this.attach(d, record, launched.qmp, launched.child);
      await unlink(d.intent);
      this.log.info('vm started', { vm: name, pid: launched.proc.pid, accel });
      this.emitVm(name, 'started', { pid: launched.proc.pid, restarts });
    } catch (err) {
      const att = this.attached.get(name);
      if (att) await this.detach(att);
      else await launched?.qmp.close();
      const stderrTail = await qemuStderrTail(d.qemuLog);
      await this.teardown(d, record);
      await writeExit(d, { reason: 'start-failed', at: new Date().toISOString(), stderrTail });
      this.emitVm(name, 'start-failed', { message: (err as Error).message });
      if (err instanceof FdError) throw err;
      throw new FdError('FD_VM_START_FAILED', `VM ${name} did not start: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Each UEFI VM keeps its own variable store in the data dir, copied from OVMF's template. */
  private async uefiVars(spec: VmSpec): Promise<string> {
    const dir = join(this.opts.dataDir, 'vms', spec.uuid);
    const path = join(dir, 'OVMF_VARS.fd');
    if (!existsSync(path)) {
      await mkdir(dir, { recursive: true });
      await copyFile(OVMF_VARS_TEMPLATE, `${path}.tmp`);
      await rename(`${path}.tmp`, path);
    }
    return path;
  }

  // ---- stop ----

  private async beginStop(att: Attached, reason: ExitReason): Promise<void> {
    att.expectingExit = reason;
    await writeIntent(att.dir, { op: 'stop', step: 'qemu', reason, at: new Date().toISOString() });
    await this.opts.faultPoint?.('stop:qemu');
  }

  /** Waits for QEMU to exit; false on timeout. */
  private async waitExit(att: Attached, timeoutMs: number): Promise<boolean> {
    const proc = att.record.qemu!;
    const timer = sleep(timeoutMs).then(() => false);
    const gone = att.gone.then(() => waitGone(proc, 5000));
    return Promise.race([gone, timer]);
  }

  private async forceExit(att: Attached): Promise<void> {
    const proc = att.record.qemu!;
    if (!isRunning(proc)) return;
    try {
      await att.qmp.execute('quit', undefined, { timeoutMs: 2000 });
    } catch (err) {
      if (!isFdError(err, 'FD_QMP_CLOSED') && !isFdError(err, 'FD_QMP_TIMEOUT')) throw err;
    }
    if (await waitGone(proc, 3000)) return;
    signalIdentity(proc, 'SIGKILL');
    await waitGone(proc, 5000);
  }

  private async finishStop(att: Attached, reason: ExitReason): Promise<void> {
    await writeIntent(att.dir, { op: 'stop', step: 'cleanup', reason, at: new Date().toISOString() });
    await this.opts.faultPoint?.('stop:cleanup');
    const exit = await this.exitRecord(att, reason);
    await this.detach(att);
    await this.teardown(att.dir, att.record);
    await writeExit(att.dir, exit);
    this.emitVm(att.name, 'stopped', { ...exit });
  }

  private async exitRecord(att: Attached, reason: ExitReason, noticedLate = false): Promise<ExitRecord> {
    return {
      reason,
      at: new Date().toISOString(),
      ...(att.record.qemu ? { pid: att.record.qemu.pid } : {}),
      ...(att.childExit ? { exitCode: att.childExit.code, signal: att.childExit.signal } : {}),
      stderrTail: await qemuStderrTail(att.dir.qemuLog),
      ...(noticedLate ? { noticedLate } : {}),
    };
  }

  /** Stops everything a VM may have left (QEMU, vdisks, taps, sockets), found by record and by scan. */
  private async teardown(d: VmDir, record: VmRecord | undefined): Promise<void> {
    if (record?.qemu && isRunning(record.qemu)) {
      signalIdentity(record.qemu, 'SIGKILL');
      await waitGone(record.qemu, 5000);
    }
    // orphans a killed runner never recorded: QEMU first (it holds the vdisk connections)
    for (const p of await findProcessesMentioning(d.dir + '/')) {
      const cmd = await readFile(`/proc/${p.pid}/cmdline`, 'utf8').catch(() => '');
      if (cmd.includes('qemu-system')) {
        signalIdentity(p, 'SIGKILL');
        await waitGone(p, 5000);
      }
    }
    if (record?.vdisk) await stopVdisk(record.vdisk);
    for (const p of await findProcessesMentioning(d.dir + '/')) await terminate(p, 5000);
    for (const t of record?.taps ?? []) await deleteTap(t.tap);
    await clearRuntime(d, record);
  }

  // ---- watching ----

  private attach(d: VmDir, record: VmRecord, qmp: QmpClient, child?: ChildProcess): Attached {
    let markGone!: () => void;
    const gone = new Promise<void>((r) => (markGone = r));
    const att: Attached = {
      name: record.spec.name,
      dir: d,
      record,
      qmp,
      poll: setInterval(() => {
        if (record.qemu && !isRunning(record.qemu)) void this.onGone(att);
        else if (record.vdisk && !isRunning(record.vdisk) && !att.expectingExit) void this.reviveVdisk(att);
      }, 200),
      gone,
      markGone,
      handled: false,
      ...(child ? { child } : {}),
    };
    att.poll.unref();
    if (child) {
      child.once('exit', (code, signal) => {
        att.childExit = { code, signal };
        void this.onGone(att);
      });
    }
    qmp.on('event', (ev: QmpEvent) => this.onQmpEvent(att, ev));
    qmp.on('close', () => {
      if (this.attached.get(att.name) !== att) return;
      // QEMU closes QMP as it exits; give it a moment, then the pid decides
      void waitGone(record.qemu!, 2000).then(async (goneNow) => {
        if (goneNow) await this.onGone(att);
      });
    });
    this.attached.set(att.name, att);
    return att;
  }

  private async detach(att: Attached): Promise<void> {
    clearInterval(att.poll);
    if (this.attached.get(att.name) === att) this.attached.delete(att.name);
    att.qmp.removeAllListeners('event');
    att.qmp.removeAllListeners('close');
    await att.qmp.close();
  }

  private onQmpEvent(att: Attached, ev: QmpEvent): void {
    const map: Record<string, VmEventType> = {
      STOP: 'paused',
      RESUME: 'resumed',
      RESET: 'reset',
      POWERDOWN: 'powerdown',
    };
    if (ev.event === 'SHUTDOWN') {
      att.guestShutdown = ev.data['guest'] === true;
      att.lastShutdownReason = String(ev.data['reason'] ?? '');
      return;
    }
    const type = map[ev.event];
    if (type) this.emitVm(att.name, type, ev.data);
    else this.emitVm(att.name, 'qmp', { event: ev.event, ...ev.data });
  }

  /** QEMU is gone. Operations that expected it handle it themselves; anything else is recorded here. */
  private async onGone(att: Attached): Promise<void> {
    if (att.handled) return;
    att.handled = true;
    clearInterval(att.poll);
    att.markGone();
    if (att.expectingExit) return;
    if (this.closed) return;
    await this.withLock(att.name, async () => {
      if (this.attached.get(att.name) !== att) return;
      if (!att.childExit && att.child) await sleep(50); // let the exit status arrive
      const reason: 'guest-shutdown' | 'crashed' = att.guestShutdown ? 'guest-shutdown' : 'crashed';
      const exit = await this.exitRecord(att, reason);
      if (att.lastShutdownReason) exit.stderrTail ||= `(shutdown reason: ${att.lastShutdownReason})`;
      await this.detach(att);
      await this.teardown(att.dir, att.record);
      await writeExit(att.dir, exit);
      this.log.warn(`vm ${reason}`, { vm: att.name, pid: exit.pid, stderr: exit.stderrTail });
      this.emitVm(att.name, reason, { ...exit });
      this.applyRestartPolicy(att.record, reason);
    });
  }

  /**
   * A VM's vdisk died while QEMU runs: start it again on the same sockets. QEMU's NBD client
   * (reconnect-delay) holds the guest's I/O meanwhile, so the guest sees a stall, not an error.
   */
  private async reviveVdisk(att: Attached): Promise<void> {
    await this.withLock(att.name, async () => {
      const rec = att.record;
      if (this.attached.get(att.name) !== att || att.expectingExit || !rec.vdisk || isRunning(rec.vdisk)) return;
      const dead = rec.vdisk.pid;
      const d = att.dir;
      const runAs = rec.runAs ? this.runAs() : null;
      try {
        await startVdisk({
          exports: rec.vdiskExports.map(({ image, socketPath, exportName, readOnly }) => ({
            image,
            socketPath,
            exportName,
            readOnly,
          })),
          configPath: d.vdiskConfig,
          logPath: d.vdiskLog,
          ...(runAs ? { socketOwner: { uid: runAs.uid, gid: runAs.gid } } : {}),
          onSpawn: async (proc) => {
            rec.vdisk = proc;
            await writeRecord(d, rec);
          },
        });
        this.log.warn('vdisk restarted', { vm: att.name, deadPid: dead, pid: rec.vdisk.pid });
        this.emitVm(att.name, 'vdisk-restarted', { deadPid: dead, pid: rec.vdisk.pid });
      } catch (err) {
        this.log.error('vdisk restart failed', { vm: att.name, err: (err as Error).message });
      }
    });
  }

  // ---- restart policy ----

  private applyRestartPolicy(record: VmRecord, reason: ExitReason): void {
    const policy = record.spec.restartPolicy;
    const wanted =
      (policy === 'always' && (reason === 'crashed' || reason === 'guest-shutdown')) ||
      (policy === 'on-failure' && reason === 'crashed');
    if (!wanted || this.closed) return;
    const name = record.spec.name;
    const windowMs = this.opts.restartWindowMs ?? 600_000;
    const now = Date.now();
    const times = (this.restartTimes.get(name) ?? []).filter((t) => now - t < windowMs);
    if (times.length >= (record.spec.maxRestarts ?? this.opts.maxRestarts ?? 5)) {
      this.emitVm(name, 'restart-failed', { message: `gave up after ${times.length} restarts`, policy });
      return;
    }
    times.push(now);
    this.restartTimes.set(name, times);
    const delayMs = Math.min(250 * 2 ** (times.length - 1), 30_000);
    this.emitVm(name, 'restarting', { policy, reason, delayMs, attempt: times.length });
    const t = setTimeout(() => {
      this.pendingRestarts.delete(name);
      if (this.closed) return;
      void (async () => {
        if (this.restartGate && !(await this.restartGate(name).catch(() => false))) {
          this.emitVm(name, 'restart-held', { policy });
          return;
        }
        await this.withLock(name, () => this.startLocked(record.spec, record.restarts + 1));
      })().catch((err: unknown) => {
        // A restart that fails (QEMU died again while starting) is one more crash: the policy
        // tries again within its budget, and reports when that is spent.
        this.log.warn('restart by policy failed', { vm: name, err: (err as Error).message });
        this.applyRestartPolicy(record, 'crashed');
      });
    }, delayMs);
    this.pendingRestarts.set(name, t);
  }

  /**
   * Changes a running VM's restart policy in place (HA turned on or off while it runs); the
   * record on disk follows, so a reattaching runner keeps it.
   */
  async setRestartPolicy(name: string, policy: VmSpec['restartPolicy'], maxRestarts?: number): Promise<void> {
    await this.withLock(name, async () => {
      const att = this.attached.get(name);
      if (!att) return;
      const spec = att.record.spec;
      if (spec.restartPolicy === policy && spec.maxRestarts === maxRestarts) return;
      const { maxRestarts: _old, ...rest } = spec;
      att.record.spec = { ...rest, restartPolicy: policy, ...(maxRestarts !== undefined ? { maxRestarts } : {}) };
      await writeRecord(att.dir, att.record);
    });
  }

  /** Cancels a restart waiting out its backoff; true if there was one. */
  private cancelRestart(name: string): boolean {
    const t = this.pendingRestarts.get(name);
    if (t) clearTimeout(t);
    return this.pendingRestarts.delete(name);
  }

  // ---- reattach and repair ----

  private async reattachOne(name: string): Promise<ReattachResult['outcome']> {
    const d = vmDir(this.opts.runDir, name);
    const [record, intent] = await Promise.all([readRecord(d), readIntent(d)]);
    const alive = record?.qemu !== undefined && isRunning(record.qemu);

    if (intent?.op === 'start') {
      if (record && alive && intent.step === 'qmp') {
        const qmp = await QmpClient.connect(d.qmp).catch(() => undefined);
        if (qmp) {
          this.attach(d, record, qmp);
          await unlink(d.intent);
          this.emitVm(name, 'repaired', { outcome: 'start-adopted', pid: record.qemu!.pid });
          return 'start-adopted';
        }
      }
      await this.teardown(d, record);
      await writeExit(d, {
        reason: 'start-interrupted',
        at: new Date().toISOString(),
        stderrTail: await qemuStderrTail(d.qemuLog),
        noticedLate: true,
      });
      this.emitVm(name, 'repaired', { outcome: 'start-rolled-back', step: intent.step });
      return 'start-rolled-back';
    }
    if (intent?.op === 'stop') {
      await this.teardown(d, record);
      await writeExit(d, {
        reason: intent.reason,
        at: new Date().toISOString(),
        ...(record?.qemu ? { pid: record.qemu.pid } : {}),
        stderrTail: await qemuStderrTail(d.qemuLog),
        noticedLate: true,
      });
      this.emitVm(name, 'repaired', { outcome: 'stop-completed' });
      return 'stop-completed';
    }
    if (!record) return 'stopped';
    if (alive) {
      try {
        const qmp = await QmpClient.connect(d.qmp, { timeoutMs: 5000 });
        this.attach(d, record, qmp);
        this.emitVm(name, 'reattached', { pid: record.qemu!.pid });
        // a vdisk that died while we were away is revived by the monitor's next poll
        return 'attached';
      } catch (err) {
        // QEMU alive but its QMP is not: treat as crashed rather than leave an unmanageable VM
        this.log.warn('live QEMU without QMP; stopping it', { vm: name, err: (err as Error).message });
      }
    }
    const exit: ExitRecord = {
      reason: 'crashed',
      at: new Date().toISOString(),
      ...(record.qemu ? { pid: record.qemu.pid } : {}),
      stderrTail: await qemuStderrTail(d.qemuLog),
      noticedLate: true,
    };
    await this.teardown(d, record);
    await writeExit(d, exit);
    this.emitVm(name, 'died-while-away', { ...exit });
    this.applyRestartPolicy(record, 'crashed');
    return 'died-while-away';
  }

  // ---- helpers ----

  private async init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(this.opts.runDir, { recursive: true });
      await mkdir(this.opts.dataDir, { recursive: true });
      await this.takeLock();
    })();
    return this.ready;
  }

  /** One runner per run dir: two would both "repair" the same VM. */
  private async takeLock(): Promise<void> {
    const path = join(this.opts.runDir, '.runner.lock');
    const me = identify(process.pid)!;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(path, 'wx');
        await fh.writeFile(JSON.stringify(me));
        await fh.close();
        return;
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw err;
      }
      let holder: ProcIdentity | undefined;
      try {
        holder = JSON.parse(await readFile(path, 'utf8')) as ProcIdentity;
      } catch (err) {
        if (!isErrno(err, 'ENOENT') && !(err instanceof SyntaxError)) throw err;
      }
      if (holder && isRunning(holder) && holder.pid !== process.pid)
        throw new FdError('FD_RUNNER_BUSY', `another runner (pid ${holder.pid}) manages ${this.opts.runDir}`, {
          hint: 'stop the other flightdeck daemon first',
        });
      if (holder && holder.pid === process.pid) {
        throw new FdError('FD_RUNNER_BUSY', `another VmRunner in this process already manages ${this.opts.runDir}`);
      }
      await unlink(path).catch(() => undefined); // stale: its owner is dead
    }
    throw new FdError('FD_RUNNER_BUSY', `could not take the runner lock in ${this.opts.runDir}`);
  }

  private accel(): Promise<Accel> {
    if (this.opts.accel) return Promise.resolve(this.opts.accel);
    const kernel = this.opts.probeKernel ?? tinyImagePaths().kernel;
    this.accelVerdict ??= detectAccel({
      dataDir: this.opts.dataDir,
      ...(existsSync(kernel) ? { kernelPath: kernel } : {}),
    }).then((v) => {
      this.log.info('accelerator', { accel: v.accel, reason: v.reason });
      return v.accel;
    });
    return this.accelVerdict;
  }

  /** The user QEMU drops to, if it can reach the run dir as that user; else null (stay as we are). */
  private runAs(): { user: string; uid: number; gid: number } | null {
    if (this.runAsResolved !== undefined) return this.runAsResolved;
    const want = this.opts.qemuUser === undefined ? 'auto' : this.opts.qemuUser;
    if (want === null || (want === 'auto' && process.getuid?.() !== 0)) return (this.runAsResolved = null);
    const user = want === 'auto' ? 'nobody' : want;
    const ids = spawnSync('id', ['-u', user], { encoding: 'utf8' });
    const gids = spawnSync('id', ['-g', user], { encoding: 'utf8' });
    if (ids.status !== 0 || gids.status !== 0) {
      if (want !== 'auto') throw new FdError('FD_VM_USER_NOT_FOUND', `user ${user} does not exist`);
      return (this.runAsResolved = null);
    }
    const uid = Number(ids.stdout.trim());
    const gid = Number(gids.stdout.trim());
    // the run dir must be searchable by that user, or NBD reconnects would fail after the drop
    const probe = spawnSync('test', ['-x', this.opts.runDir], { uid, gid });
    if (probe.status !== 0) {
      this.log.warn('QEMU stays as our user: the run dir is not reachable by the unprivileged user', {
        user,
        runDir: this.opts.runDir,
      });
      return (this.runAsResolved = null);
    }
    return (this.runAsResolved = { user, uid, gid });
  }

  private mustBeAttached(name: string): Attached {
    const att = this.attached.get(name);
    if (!att) {
      if (existsSync(vmDir(this.opts.runDir, name).dir))
        throw new FdError('FD_VM_NOT_RUNNING', `VM ${name} is not running`, { status: 409 });
      throw new FdError('FD_VM_NOT_FOUND', `no VM named ${name} on this host`);
    }
    return att;
  }

  private withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(name, settled);
    void settled.then(() => {
      if (this.locks.get(name) === settled) this.locks.delete(name);
    });
    return next;
  }

  private emitVm(vm: string, type: VmEventType, detail?: Record<string, unknown>): void {
    const ev: VmEvent = { vm, type, at: new Date().toISOString(), ...(detail ? { detail } : {}) };
    this.emit('event', ev);
  }
}
