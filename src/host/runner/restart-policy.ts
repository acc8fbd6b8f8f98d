/**
 * The restart policy (`never`, `on-failure`, `always`): after a crash (or a guest power-off under
 * `always`) the VM starts again after a backoff, at most `maxRestarts` times per window, and only
 * when the gate allows (a clustered host must not restart a VM it may have lost).
 */
import type { Logger } from '../../core/log.js';
import type { ExitReason, VmRecord } from '../run-dir.js';
import type { VmEventType } from './types.js';

export interface RestartPolicyDeps {
  log: Logger;
  windowMs: number;
  maxRestarts: number;
  closed(): boolean;
  emit(vm: string, type: VmEventType, detail?: Record<string, unknown>): void;
  /** Starts the VM again (under its lock), as restart number record.restarts + 1. */
  restart(record: VmRecord): Promise<void>;
}

export class RestartPolicy {
  private readonly times = new Map<string, number[]>();
  private readonly pending = new Map<string, NodeJS.Timeout>();
  private gate: ((name: string) => Promise<boolean>) | undefined;

  constructor(private readonly d: RestartPolicyDeps) {}

  setGate(gate: (name: string) => Promise<boolean>): void {
    this.gate = gate;
  }

  apply(record: VmRecord, reason: ExitReason): void {
    const policy = record.spec.restartPolicy;
    const wanted =
      (policy === 'always' && (reason === 'crashed' || reason === 'guest-shutdown')) ||
      (policy === 'on-failure' && reason === 'crashed');
    if (!wanted || this.d.closed()) return;
    const name = record.spec.name;
    const now = Date.now();
    const times = (this.times.get(name) ?? []).filter((t) => now - t < this.d.windowMs);
    if (times.length >= (record.spec.maxRestarts ?? this.d.maxRestarts)) {
      this.d.emit(name, 'restart-failed', { message: `gave up after ${times.length} restarts`, policy });
      return;
    }
    times.push(now);
    this.times.set(name, times);
    const delayMs = Math.min(250 * 2 ** (times.length - 1), 30_000);
    this.d.emit(name, 'restarting', { policy, reason, delayMs, attempt: times.length });
    const t = setTimeout(() => {
      this.pending.delete(name);
      if (this.d.closed()) return;
      void (async () => {
        if (this.gate && !(await this.gate(name).catch(() => false))) {
          this.d.emit(name, 'restart-held', { policy });
          return;
        }
        await this.d.restart(record);
      })().catch((err: unknown) => {
        // A restart that fails (QEMU died again while starting) is one more crash: the policy
        // tries again within its budget, and reports when that is spent.
        this.d.log.warn('restart by policy failed', { vm: name, err: (err as Error).message });
        this.apply(record, 'crashed');
      });
    }, delayMs);
    this.pending.set(name, t);
  }

  /** Cancels a restart waiting out its backoff; true if there was one. */
  cancel(name: string): boolean {
    const t = this.pending.get(name);
    if (t) clearTimeout(t);
    return this.pending.delete(name);
  }

  cancelAll(): void {
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
  }
}
