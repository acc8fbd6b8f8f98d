/**
 * What the host agent needs from the machinery that runs VMs on this host. The local
 * implementation (local.ts) compiles a VM record into a QEMU spec and drives the host layer's
 * VM runner; the fake (fake.ts) keeps VMs in memory behind a scripted QEMU, so the agent's
 * reconcile, fencing, migration and takeover logic is tested in milliseconds.
 */
import { isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { VmActualState, VmRecord } from '../state/model.js';
import type { QemuControl, RunStatus } from '../../qemu/control/index.js';

export interface RuntimeStatus {
  state: VmActualState;
  pid: number | null;
  /** Why the VM is not running when it should be: QEMU's stderr tail, exit reason. */
  lastError: string | null;
  /** True when the guest itself powered off (as opposed to a crash). */
  guestShutdown?: boolean;
  /** A restart by policy was held by the restart gate; the agent restarts it when it may. */
  restartHeld?: boolean;
}

export interface VmStats {
  id: string;
  name: string;
  cpuSeconds?: number;
  memoryBytes?: number;
  rssBytes?: number;
  diskReadBytes?: number;
  diskWriteBytes?: number;
  /** Write requests the guest's disks completed, and the time they took (QEMU's accounting). */
  diskWriteOps?: number;
  diskWriteTimeNs?: number;
  netRxBytes?: number;
  netTxBytes?: number;
}

export interface Runtime {
  /** Finds VMs left running by an earlier daemon and takes them over again. */
  reattach(ids: string[]): Promise<Map<string, RuntimeStatus>>;
  start(vm: VmRecord, log: Logger): Promise<void>;
  /**
   * Starts the target of a live migration: QEMU waits for the incoming state and stays paused;
   * `diskPaths` (disk id -> path) are this host's new copies, not the source's.
   */
  startIncoming(vm: VmRecord, diskPaths: Record<string, string>): Promise<void>;
  /** The running VM's QEMU, through the typed control layer (migration, mirrors, block jobs). */
  control(id: string): QemuControl;
  /** Whether a QEMU runs for the VM here and what it says of its run state (null: none here). */
  qemuStatus(id: string): Promise<RunStatus | null>;
  stop(id: string, opts: { graceful: boolean; timeoutMs: number }): Promise<void>;
  setPaused(id: string, paused: boolean): Promise<void>;
  reboot(id: string): Promise<void>;
  status(id: string): Promise<RuntimeStatus>;
  serialSocket(id: string): Promise<string>;
  /** The VM's QEMU VNC server (RFB on a unix socket; the API relays it to browsers). */
  vncSocket(id: string): Promise<string>;
  /** The guest's screen now, as PNG bytes. */
  screenshot(id: string): Promise<Buffer>;
  logs(id: string, lines: number): Promise<{ serial: string[]; qemu: string[] }>;
  stats(ids: { id: string; name: string }[]): Promise<VmStats[]>;
  /** VMs this host has a run dir for (running or not), by id. */
  localIds(): Promise<string[]>;
  /** Removes what a stopped VM left on this host (run dir, sockets, taps). */
  cleanup(id: string): Promise<void>;
  /** Called when a VM's state changes on its own: crash, guest power-off, QEMU killed. */
  onChange(listener: (id: string, status: RuntimeStatus) => void): void;
  /** Applies the VM record's restart policy (and HA budget) to its running QEMU, if any. */
  applyRestartPolicy(vm: VmRecord): Promise<void>;
  /** Asked before a restart by policy; false holds it (see Runner.setRestartGate). */
  setRestartGate(gate: (id: string) => Promise<boolean>): void;
  close(): Promise<void>;
}

/**
 * Pulls the plug on a VM's QEMU here if one runs; none running is not an error. Every "make
 * sure nothing of it runs here" (a source after its move, a target after an abort, a fenced
 * copy) comes through here.
 */
export async function forceOff(runtime: Runtime, id: string): Promise<void> {
  const st = await runtime.status(id);
  if (st.state === 'stopped' || st.state === 'crashed') return;
  try {
    await runtime.stop(id, { graceful: false, timeoutMs: 0 });
  } catch (err) {
    // It stopped between the two calls.
    if (!isFdError(err, 'FD_VM_NOT_RUNNING') && !isFdError(err, 'FD_VM_NOT_FOUND')) throw err;
  }
}
