/**
 * Block jobs (disk mirrors): start one, read their progress, cancel them and wait until they
 * are gone. Waiting follows QEMU's job events, with the job list read once so that a job that
 * ended before the wait began is not waited for.
 */
import { FdError } from '../../core/errors.js';
import type { QmpChannel, QmpEvent } from '../qmp.js';

export interface BlockJob {
  /** The job id (we name jobs after their target node). */
  device: string;
  type: string;
  /** Bytes copied so far, of `len` (len grows while the guest writes). */
  offset: number;
  len: number;
  /** In sync: every guest write now reaches both sides (a mirror job in write-blocking mode). */
  ready: boolean;
  status: string;
}

export interface MirrorOptions {
  jobId: string;
  /** Node read from (the guest disk's node). */
  source: string;
  /** Node written to (an NBD client node added first). */
  target: string;
  /** top: only the top image of the chain travels (the target has the same base). */
  sync: 'top' | 'full';
  /**
   * write-blocking: once the bulk copy is done every guest write completes on both sides
   * before the guest sees it complete, so the mirror never falls behind a fast writer.
   */
  copyMode: 'write-blocking' | 'background';
}

const ENDED = ['BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED'];

export class BlockJobs {
  constructor(private readonly q: QmpChannel) {}

  async list(): Promise<BlockJob[]> {
    return this.q.execute<BlockJob[]>('query-block-jobs');
  }

  /** The jobs whose id passes `pick`. */
  async matching(pick: (jobId: string) => boolean): Promise<BlockJob[]> {
    return (await this.list()).filter((j) => pick(j.device));
  }

  async mirror(o: MirrorOptions): Promise<void> {
    await this.q.execute('blockdev-mirror', {
      'job-id': o.jobId,
      device: o.source,
      target: o.target,
      sync: o.sync,
      'copy-mode': o.copyMode,
      'auto-finalize': true,
    });
  }

  /**
   * Ends a job without pivoting: the source keeps its own disk. Without force a mirror first
   * copies what it still has to (it is "ready" again); with force it stops at once.
   */
  async cancel(jobId: string, opts: { force: boolean }): Promise<void> {
    await this.q.execute('block-job-cancel', { device: jobId, force: opts.force });
  }

  /** Cancels each job, ignoring jobs that are already gone. */
  async cancelAll(jobIds: string[], opts: { force: boolean }): Promise<void> {
    const live = new Set((await this.list()).map((j) => j.device));
    for (const id of jobIds) if (live.has(id)) await this.cancel(id, opts);
  }

  /** Resolves true once none of these jobs exists, false after `timeoutMs`. */
  async waitGone(jobIds: string[], timeoutMs: number): Promise<boolean> {
    const left = new Set(jobIds);
    let wake: (() => void) | undefined;
    const onEvent = (ev: QmpEvent): void => {
      if (!ENDED.includes(ev.event)) return;
      left.delete(String(ev.data['device']));
      if (!left.size) wake?.();
    };
    this.q.on('event', onEvent);
    try {
      // Listening first, then reading the list: a job that ends in between is seen either way.
      const live = new Set((await this.list()).map((j) => j.device));
      for (const id of [...left]) if (!live.has(id)) left.delete(id);
      if (!left.size) return true;
      return await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        wake = () => {
          clearTimeout(timer);
          resolve(true);
        };
      });
    } finally {
      this.q.off('event', onEvent);
    }
  }

  /** Waits until every one of these jobs is ready (in sync), failing if one ends first. */
  async waitReady(jobIds: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const jobs = (await this.list()).filter((j) => jobIds.includes(j.device));
      if (jobs.length < jobIds.length)
        throw new FdError('FD_BLOCK_JOB_ENDED', `a disk mirror ended before it was in sync (${jobIds.join(', ')})`);
      if (jobs.every((j) => j.ready)) return;
      if (Date.now() > deadline)
        throw new FdError('FD_BLOCK_JOB_TIMEOUT', `disk mirrors not in sync after ${timeoutMs} ms`);
      await this.q
        .waitEvent('BLOCK_JOB_READY', { timeoutMs: Math.max(1, Math.min(1000, deadline - Date.now())) })
        .catch(() => undefined);
    }
  }
}
