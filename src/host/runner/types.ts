/** The runner's public types: states, statuses, events, options; and its record of a watched VM. */
import type { ChildProcess } from 'node:child_process';
import type { Logger } from '../../core/log.js';
import type { Accel } from '../../qemu/argv.js';
import type { QmpClient } from '../../qemu/qmp.js';
import type { VmSpec } from '../../qemu/spec.js';
import type { ExitReason, ExitRecord, VmDir, VmRecord } from '../run-dir.js';

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

/** A VM the runner watches: its run dir, record, QMP connection and how it went. */
export interface Attached {
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
