/**
 * What one migration case reports, and the two steps every case shares: let the freshly booted
 * guest settle before migrating, and read the observed downtime once the target has run a while.
 */
import { sleep, waitFor } from '../../src/core/process.js';
import { type HeartbeatWatch, nowMs } from './heartbeats.js';

export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
}

export interface CaseResult {
  label: string;
  converged: boolean;
  /** From the migrate request to completion (or to the cap, when it did not converge). */
  wallMs: number;
  /** QEMU's own numbers from query-migrate (ours: from the task result). */
  qemuTotalMs: number | null;
  qemuDowntimeMs: number | null;
  ramBytes: number | null;
  /** Largest gap between heartbeat arrivals on the host, from the request to 2 s after the end. */
  observedDowntimeMs: number;
  /** The same measure over the 3 s before the migration: the noise floor of this (shared) host. */
  baselineGapMs: number;
  /** Heartbeat sequence numbers around the largest gap (continuing: the same guest, no reboot). */
  gapSeq: [number, number];
  /** The guest dirtier's page-write rate before the migration (0 = idle guest). */
  dirtyRateMiBps: number;
  extra?: Record<string, unknown>;
}

/** Waits for the guest to finish booting and run 2 s more (and, with the dirtier, report a rate). */
export async function settle(watch: HeartbeatWatch, dirty: boolean): Promise<void> {
  await waitFor('guest ready (FD-READY on serial)', () => (watch.ready ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 50,
  });
  if (dirty)
    await waitFor('dirtier running (FD-DIRTY on serial)', () => (watch.dirty.length >= 3 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 50,
    });
  await sleep(3000);
}

export async function observe(
  watch: HeartbeatWatch,
  r: Omit<CaseResult, 'observedDowntimeMs' | 'gapSeq'> & { t0: number },
): Promise<CaseResult> {
  const end = r.t0 + r.wallMs;
  const seqAtEnd = watch.lastSeq();
  // The target's heartbeats must be flowing again before the gap can be known.
  await waitFor('heartbeats after the migration', () => (watch.lastSeq() > seqAtEnd + 50 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 20,
  });
  await sleep(Math.max(0, end + 2000 - nowMs()));
  const g = watch.maxGap(r.t0, nowMs());
  const { t0: _t0, ...rest } = r;
  void _t0;
  return { ...rest, observedDowntimeMs: g.gapMs, gapSeq: [g.seqBefore, g.seqAfter] };
}
