/**
 * Progress of long work, reported the same way everywhere: a task in the daemon, a bar in the
 * CLI. Producers call `report(done)`; consumers get done/total, rate and ETA.
 */
export interface ProgressSnapshot {
  done: number;
  total: number;
  unit: 'bytes' | 'items';
  ratePerS: number;
  etaS: number | null;
  message?: string;
}

export type ProgressListener = (p: ProgressSnapshot) => void;

export class Progress {
  private readonly startedAt = Date.now();
  private lastEmit = 0;
  done = 0;

  constructor(
    public total: number,
    private readonly listener: ProgressListener | undefined,
    readonly unit: 'bytes' | 'items' = 'bytes',
    private readonly minIntervalMs = 200,
  ) {}

  report(done: number, message?: string, force = false): void {
    this.done = done;
    if (!this.listener) return;
    const now = Date.now();
    if (!force && now - this.lastEmit < this.minIntervalMs && done < this.total) return;
    this.lastEmit = now;
    this.listener(this.snapshot(message));
  }

  add(n: number): void {
    this.report(this.done + n);
  }

  finish(message?: string): void {
    this.report(this.total, message, true);
  }

  snapshot(message?: string): ProgressSnapshot {
    const elapsedS = Math.max((Date.now() - this.startedAt) / 1000, 1e-3);
    const ratePerS = this.done / elapsedS;
    const etaS = ratePerS > 0 && this.total > 0 ? Math.max(0, (this.total - this.done) / ratePerS) : null;
    return { done: this.done, total: this.total, unit: this.unit, ratePerS, etaS, ...(message ? { message } : {}) };
  }
}
