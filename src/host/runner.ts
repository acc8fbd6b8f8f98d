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
import type { ChildProcess } from 'node:child_process';
import { mkdir, unlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { FdError, isFdError } from '../core/errors.js';
import { silentLogger, type Logger } from '../core/log.js';
import { sleep } from '../core/process.js';
import { detectAccel } from '../qemu/accel.js';
import type { Accel } from '../qemu/argv.js';
import { qemuIds } from '../qemu/nodes.js';
import { QemuControl } from '../qemu/control/index.js';
import { QmpClient } from '../qemu/qmp.js';
import { parseVmSpec, type VmSpec } from '../qemu/spec.js';
import { isRunning, signalIdentity, waitGone } from './pidfile.js';
import {
  listVmDirs,
  removeVmDir,
  vmDir,
  writeExit,
  writeIntent,
  writeRecord,
  type ExitReason,
  type VmDir,
  type VmRecord,
} from './run-dir.js';
import { tinyImagePaths } from './images/tiny.js';
import { KeyedLock } from '../core/keyed-lock.js';
import { runnerLockPath, takeRunnerLock } from './runner/locks.js';
import { reattachOne } from './runner/reattach.js';
import { RestartPolicy } from './runner/restart-policy.js';
import { resolveConfinement, resolveRunAs, type RunAs } from './runner/run-as.js';
import { startVm, startVmVdisk, type Confinement } from './runner/start.js';
import { openRunDirToVms } from './confine/run-dir-access.js';
import { vmStatus } from './runner/status.js';
import { exitRecordOf, teardown } from './runner/teardown.js';
import { unwatchVm, watchVm } from './runner/watch.js';
import type {
  Attached,
  ReattachResult,
  ShutdownResult,
  VmEvent,
  VmEventType,
  VmRunnerOptions,
  VmStatus,
} from './runner/types.js';

export {
  OVMF_CODE,
  OVMF_VARS_TEMPLATE,
  type ReattachResult,
  type ShutdownResult,
  type VmEvent,
  type VmEventType,
  type VmRunnerOptions,
  type VmState,
  type VmStatus,
} from './runner/types.js';

/**
 * Events: `event` (VmEvent) for everything that happens to a VM; `error` is never emitted.
 */
export class VmRunner extends EventEmitter {
  private readonly log: Logger;
  private readonly attached = new Map<string, Attached>();
  private readonly locks = new KeyedLock();
  private readonly restarts: RestartPolicy;

  /**
   * Asked before each restart by policy. A clustered host must not restart a guarded VM while
   * it may have lost that VM to another host (its fence keeper just killed it for that reason).
   */
  setRestartGate(gate: (name: string) => Promise<boolean>): void {
    this.restarts.setGate(gate);
  }
  private accelVerdict: Promise<Accel> | undefined;
  private runAsResolved: RunAs | null | undefined;
  private confinementResolved: Confinement | null | undefined;
  private ready: Promise<void> | undefined;
  private closed = false;

  constructor(private readonly opts: VmRunnerOptions) {
    super();
    this.log = opts.log ?? silentLogger;
    this.restarts = new RestartPolicy({
      log: this.log,
      windowMs: opts.restartWindowMs ?? 600_000,
      maxRestarts: opts.maxRestarts ?? 5,
      closed: () => this.closed,
      emit: (vm, type, detail) => this.emitVm(vm, type, detail),
      restart: (record) => this.withLock(record.spec.name, () => this.startLocked(record.spec, record.restarts + 1)),
    });
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
    this.restarts.cancelAll();
    await this.locks.settled();
    for (const att of [...this.attached.values()]) await this.detach(att);
    if (this.ready) await unlink(runnerLockPath(this.opts.runDir)).catch(() => undefined);
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
      if (this.restarts.cancel(name) && !this.attached.has(name)) return { graceful: true }; // down, awaiting restart
      const att = this.mustBeAttached(name);
      await this.beginStop(att, 'stopped');
      try {
        await ctl(att).run.powerButton({ timeoutMs: 5000 });
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
      if (this.restarts.cancel(name) && !this.attached.has(name)) return; // down, awaiting restart: stays down
      const att = this.mustBeAttached(name);
      await this.beginStop(att, 'stopped');
      await this.forceExit(att);
      await this.finishStop(att, 'stopped');
    });
  }

  async pause(name: string): Promise<void> {
    await this.withLock(name, () => ctl(this.mustBeAttached(name)).run.pause());
  }

  async resume(name: string): Promise<void> {
    await this.withLock(name, () => ctl(this.mustBeAttached(name)).run.resume());
  }

  /** Hard reset, like the reset button: the guest gets no say. */
  async reset(name: string): Promise<void> {
    await this.withLock(name, () => ctl(this.mustBeAttached(name)).run.reset());
  }

  /**
   * Reboot: asks the guest (Ctrl-Alt-Del) and waits for it to reset; a guest that does not within
   * `timeoutMs` gets a hard reset. Resolves with how it went.
   */
  async reboot(name: string, opts: { timeoutMs?: number } = {}): Promise<{ graceful: boolean }> {
    return this.withLock(name, async () => {
      const att = this.mustBeAttached(name);
      const reset = ctl(att).run.nextReset(opts.timeoutMs ?? 30_000);
      reset.catch(() => undefined);
      await ctl(att).display.pressKeys(['ctrl', 'alt', 'delete']);
      try {
        await reset;
        return { graceful: true };
      } catch (err) {
        if (!isFdError(err, 'FD_QMP_TIMEOUT')) throw err;
        await ctl(att).run.reset();
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
        await ctl(att).media.eject(id);
      } else {
        if (!existsSync(iso)) throw new FdError('FD_VM_MEDIA_NOT_FOUND', `ISO ${iso} does not exist`);
        await ctl(att).media.insert(id, iso);
      }
      cd.iso = iso;
      await writeRecord(att.dir, att.record);
      this.emitVm(name, 'media-changed', { cdrom: cdromId, iso });
    });
  }

  /** State read from QMP now, never from memory; a VM with no QEMU reports its last exit. */
  status(name: string): Promise<VmStatus> {
    return vmStatus(name, this.attached.get(name), vmDir(this.opts.runDir, name));
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
      this.restarts.cancel(name);
      await removeVmDir(vmDir(this.opts.runDir, name));
    });
  }

  /** Where a VM's sockets and logs are (serial.log, qemu.log, qmp.sock, vnc.sock, serial.sock). */
  paths(name: string): VmDir {
    return vmDir(this.opts.runDir, name);
  }

  // ---- start ----

  private startLocked(spec: VmSpec, restarts: number, extraArgs: string[] = []): Promise<void> {
    return startVm(
      {
        runDir: this.opts.runDir,
        dataDir: this.opts.dataDir,
        log: this.log,
        faultPoint: this.opts.faultPoint,
        accel: () => this.accel(),
        runAs: () => this.runAs(),
        confinement: () => this.confinement(),
        attached: (name) => this.attached.get(name),
        attach: (d, record, qmp, child) => void this.attach(d, record, qmp, child),
        detach: (att) => this.detach(att),
        emit: (vm, type, detail) => this.emitVm(vm, type, detail),
      },
      spec,
      restarts,
      extraArgs,
    );
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
      await ctl(att).run.quit({ timeoutMs: 2000 });
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
    const exit = await exitRecordOf(att, reason);
    await this.detach(att);
    await teardown(att.dir, att.record);
    await writeExit(att.dir, exit);
    this.emitVm(att.name, 'stopped', { ...exit });
  }

  // ---- watching ----

  private attach(d: VmDir, record: VmRecord, qmp: QmpClient, child?: ChildProcess): Attached {
    const att = watchVm(d, record, qmp, child, {
      current: (a) => this.attached.get(a.name) === a,
      gone: (a) => void this.onGone(a),
      vdiskDied: (a) => void this.reviveVdisk(a),
      event: (a, type, detail) => this.emitVm(a.name, type, detail),
    });
    this.attached.set(att.name, att);
    return att;
  }

  private async detach(att: Attached): Promise<void> {
    if (this.attached.get(att.name) === att) this.attached.delete(att.name);
    await unwatchVm(att);
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
      const exit = await exitRecordOf(att, reason);
      if (att.lastShutdownReason) exit.stderrTail ||= `(shutdown reason: ${att.lastShutdownReason})`;
      await this.detach(att);
      await teardown(att.dir, att.record);
      await writeExit(att.dir, exit);
      this.log.warn(`vm ${reason}`, { vm: att.name, pid: exit.pid, stderr: exit.stderrTail });
      this.emitVm(att.name, reason, { ...exit });
      this.restarts.apply(att.record, reason);
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
        await startVmVdisk(d, rec, runAs);
        this.log.warn('vdisk restarted', { vm: att.name, deadPid: dead, pid: rec.vdisk.pid });
        this.emitVm(att.name, 'vdisk-restarted', { deadPid: dead, pid: rec.vdisk.pid });
      } catch (err) {
        this.log.error('vdisk restart failed', { vm: att.name, err: (err as Error).message });
      }
    });
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

  // ---- reattach and repair ----

  private reattachOne(name: string): Promise<ReattachResult['outcome']> {
    return reattachOne(
      {
        runDir: this.opts.runDir,
        log: this.log,
        attach: (d, record, qmp) => void this.attach(d, record, qmp),
        emit: (vm, type, detail) => this.emitVm(vm, type, detail),
        restartAfterCrash: (record) => this.restarts.apply(record, 'crashed'),
      },
      name,
    );
  }

  // ---- helpers ----

  private async init(): Promise<void> {
    this.ready ??= (async () => {
      await mkdir(this.opts.runDir, { recursive: true });
      await mkdir(this.opts.dataDir, { recursive: true });
      await takeRunnerLock(this.opts.runDir);
      const conf = this.confinement();
      if (conf) await openRunDirToVms(this.opts.runDir, conf.users, this.log);
    })();
    return this.ready;
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
  private runAs(): RunAs | null {
    if (this.confinement()) return null; // each VM has its own users instead
    if (this.runAsResolved === undefined)
      this.runAsResolved = resolveRunAs(this.opts.qemuUser, this.opts.runDir, this.log);
    return this.runAsResolved;
  }

  private confinement(): Confinement | null {
    if (this.confinementResolved === undefined) this.confinementResolved = resolveConfinement(this.opts);
    return this.confinementResolved;
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
    return this.locks.run(name, fn);
  }

  private emitVm(vm: string, type: VmEventType, detail?: Record<string, unknown>): void {
    const ev: VmEvent = { vm, type, at: new Date().toISOString(), ...(detail ? { detail } : {}) };
    this.emit('event', ev);
  }
}

/** The typed control layer over an attached VM's QMP connection. */
function ctl(att: { qmp: QmpClient }): QemuControl {
  return new QemuControl(att.qmp);
}
