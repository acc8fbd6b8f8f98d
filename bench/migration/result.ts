/**
 * What one migration case reports, and the two steps every case shares: let the freshly booted
 * guest settle before migrating, and read the observed downtime once the target has run a while.
 */
import { sleep, waitFor } from '../../src/core/process.js';
import { type HeartbeatWatch, nowMs } from './heartbeats.js';
import type { EchoProbe } from './echo.js';

export interface GuestImage {
  kernel: string;
  initrd: string;
  cmdline: string;
}

export interface CaseResult {
  label: string;
  converged: boolean;
  /** From the migrate request to the end of the operation (or to the cap, when it did not converge). */
  wallMs: number;
  /** From the migrate request to the first heartbeat on the target's serial socket. */
  runningOnTargetMs: number | null;
  /** Plain: QEMU's total-time; ours: the task result's totalTimeMs (prepare to cleanup). */
  reportedTotalMs: number | null;
  /** QEMU's downtime from query-migrate (ours: from the task result, the same number). */
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
  /** Lab only: a TCP client on a third host pinging the guest's echo service every 20 ms. */
  echo?: {
    /** Longest round trip of a ping sent from the request to 2 s after the end. */
    maxRttMs: number | null;
    /** The same over the 3 s before the migration. */
    baselineRttMs: number | null;
    /** Pings never echoed, echoes out of order, and whether the connection closed. */
    lost: number;
    bad: number;
    closed: boolean;
  };
  extra?: Record<string, unknown>;
}

/** N of `fd.dirty_mb=N` in a kernel command line (0: no dirtier). */
export const dirtyMbOf = (cmdline: string): number => Number(/(?:^| )fd\.dirty_mb=(\d+)/.exec(cmdline)?.[1] ?? 0);

/**
 * Waits for the guest to finish booting and run 3 s more. With the dirtier, first waits until it
 * has been over its whole buffer twice: its first pass page-faults every page in (slow under TCG,
 * seconds), and a migration started then would meet a guest that barely dirties anything.
 */
export async function settle(watch: HeartbeatWatch, dirtyMb: number): Promise<void> {
  await waitFor('guest ready (FD-READY on serial)', () => (watch.ready ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 50,
  });
  if (dirtyMb > 0) {
    const pages = (dirtyMb * 2 ** 20) / 4096;
    await waitFor(
      'dirtier at full speed (FD-DIRTY on serial)',
      () => ((watch.dirty.at(-1)?.pages ?? 0) > 2 * pages ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 50 },
    );
  }
  await sleep(3000);
}

export async function observe(
  watch: HeartbeatWatch,
  r: Omit<CaseResult, 'observedDowntimeMs' | 'gapSeq' | 'runningOnTargetMs'> & { t0: number },
  echo?: EchoProbe,
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
  const first = watch.firstOnTarget();
  let echoResult: CaseResult['echo'];
  if (echo) {
    const st = await echo.stop();
    echoResult = {
      maxRttMs: echo.maxRtt(r.t0, nowMs()),
      baselineRttMs: echo.maxRtt(r.t0 - 3000, r.t0),
      lost: echo.lost(),
      bad: st.bad,
      closed: st.closed,
    };
  }
  return {
    ...rest,
    ...(echoResult ? { echo: echoResult } : {}),
    runningOnTargetMs: first === null ? null : first - r.t0,
    observedDowntimeMs: g.gapMs,
    gapSeq: [g.seqBefore, g.seqAfter],
  };
}
