/** A VM's run state through QMP: query, pause, resume, reset, power button, quit. */
import type { QmpChannel } from '../qmp.js';

/** QEMU's RunState (qapi/run-state.json). */
export type RunStatus =
  | 'running'
  | 'paused'
  | 'inmigrate'
  | 'prelaunch'
  | 'postmigrate'
  | 'finish-migrate'
  | 'shutdown'
  | 'suspended'
  | 'internal-error'
  | 'io-error'
  | 'watchdog'
  | 'guest-panicked'
  | 'restore-vm'
  | 'save-vm'
  | 'debug'
  | 'colo';

export interface Timeout {
  timeoutMs?: number;
}

export class RunState {
  constructor(private readonly q: QmpChannel) {}

  async status(opts: Timeout = {}): Promise<RunStatus> {
    return (await this.q.execute<{ status: RunStatus }>('query-status', undefined, opts)).status;
  }

  /** Stops the vCPUs; memory and devices stay as they are. */
  async pause(): Promise<void> {
    await this.q.execute('stop');
  }

  async resume(): Promise<void> {
    await this.q.execute('cont');
  }

  /** Resumes unless already running; returns whether it had to. */
  async resumeIfPaused(): Promise<boolean> {
    if ((await this.status()) === 'running') return false;
    await this.resume();
    return true;
  }

  /** The reset button: the guest reboots without shutting down. */
  async reset(): Promise<void> {
    await this.q.execute('system_reset');
  }

  /** The power button (ACPI): the guest decides what to do. */
  async powerButton(opts: Timeout = {}): Promise<void> {
    await this.q.execute('system_powerdown', undefined, opts);
  }

  /** QEMU exits at once. */
  async quit(opts: Timeout = {}): Promise<void> {
    await this.q.execute('quit', undefined, opts);
  }

  /** Resolves on the guest's next reset (a reboot it did itself or that was asked for). */
  async nextReset(timeoutMs: number): Promise<void> {
    await this.q.waitEvent('RESET', { timeoutMs });
  }
}
