/**
 * Long operations as tasks: id, state, progress, log, result, cancellation. Records live in
 * the store so any host answers for any task and history survives a restart; the work itself
 * runs in the daemon that accepted it. A daemon that restarts marks the tasks it was running
 * as failed (FD_TASK_INTERRUPTED): a task is never left "running" forever.
 */
import { FdError } from '../../core/errors.js';
import { newTaskId } from '../../core/ids.js';
import type { Logger } from '../../core/log.js';
import type { ProgressSnapshot } from '../../core/progress.js';
import type { KvStore } from './kv.js';
import type { AuditActor } from './audit.js';

export type TaskState = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface TaskTarget {
  kind: string;
  id: string;
  name?: string;
}

export interface TaskRecord {
  id: string;
  operation: string;
  title: string;
  target: TaskTarget | null;
  host: string;
  state: TaskState;
  progress: ProgressSnapshot | null;
  log: { t: string; msg: string }[];
  result: unknown;
  error: { code: string; message: string; hint?: string } | null;
  cancelRequested: boolean;
  /** Who started it (the API caller's token); absent for work the cluster started itself. */
  startedBy?: AuditActor;
  createdAt: string;
  finishedAt: string | null;
}

export interface TaskHandle {
  readonly id: string;
  readonly signal: AbortSignal;
  log(msg: string): void;
  progress(p: ProgressSnapshot): void;
}

const MAX_LOG_LINES = 200;
const KEEP_TASKS = 500;
const PROGRESS_WRITE_INTERVAL_MS = 500;

export const isFinished = (s: TaskState): boolean => s !== 'running';

export class TaskManager {
  private readonly local = new Map<string, AbortController>();
  private readonly pending = new Set<Promise<unknown>>();
  private stopWatch: (() => Promise<void>) | undefined;

  constructor(
    private readonly store: KvStore,
    private readonly host: string,
    private readonly log: Logger,
    private readonly onChange?: (t: TaskRecord) => void,
  ) {}

  /** Fails tasks this host was running when it died, and follows cancel requests. */
  async init(): Promise<void> {
    for (const t of await this.store.list<TaskRecord>('tasks/')) {
      if (t.value.host === this.host && t.value.state === 'running' && !this.local.has(t.value.id)) {
        await this.finish(t.value.id, 'failed', undefined, {
          code: 'FD_TASK_INTERRUPTED',
          message: 'the daemon stopped while this task ran',
          hint: 'check the target object, then run the operation again',
        });
      }
    }
    this.stopWatch = await this.store.watch<TaskRecord>('tasks/', (e) => {
      if (e.type !== 'put') return;
      if (e.value.cancelRequested) this.local.get(e.value.id)?.abort(new FdError('FD_TASK_CANCELLED', 'cancelled'));
      this.onChange?.(e.value);
    });
    await this.prune();
  }

  async run(
    operation: string,
    title: string,
    target: TaskTarget | null,
    work: (t: TaskHandle) => Promise<unknown>,
    opts: { by?: AuditActor } = {},
  ): Promise<TaskRecord> {
    const id = newTaskId();
    const rec: TaskRecord = {
      id,
      operation,
      title,
      target,
      host: this.host,
      state: 'running',
      progress: null,
      log: [],
      result: null,
      error: null,
      cancelRequested: false,
      ...(opts.by ? { startedBy: opts.by } : {}),
      createdAt: new Date().toISOString(),
      finishedAt: null,
    };
    await this.store.create(`tasks/${id}`, rec);
    const abort = new AbortController();
    this.local.set(id, abort);
    let lastWrite = 0;
    let pendingProgress: ProgressSnapshot | null = null;
    let flushTimer: NodeJS.Timeout | undefined;
    const lines: { t: string; msg: string }[] = [];
    const writeProgress = async (): Promise<void> => {
      flushTimer = undefined;
      lastWrite = Date.now();
      const p = pendingProgress;
      const newLines = lines.splice(0);
      await this.store
        .mutate<TaskRecord>(`tasks/${id}`, (cur) =>
          cur.state !== 'running'
            ? undefined
            : { ...cur, progress: p ?? cur.progress, log: [...cur.log, ...newLines].slice(-MAX_LOG_LINES) },
        )
        .catch((err: unknown) => this.log.warn('task progress not saved', { id, err: String(err) }));
    };
    const schedule = (): void => {
      if (flushTimer) return;
      const wait = Math.max(0, PROGRESS_WRITE_INTERVAL_MS - (Date.now() - lastWrite));
      flushTimer = setTimeout(() => void writeProgress(), wait);
    };
    const handle: TaskHandle = {
      id,
      signal: abort.signal,
      log: (msg) => {
        lines.push({ t: new Date().toISOString(), msg });
        schedule();
      },
      progress: (p) => {
        pendingProgress = p;
        schedule();
      },
    };
    const p = (async () => {
      try {
        const result = await work(handle);
        if (flushTimer) clearTimeout(flushTimer);
        await writeProgress();
        await this.finish(id, 'succeeded', result ?? null);
      } catch (err) {
        if (flushTimer) clearTimeout(flushTimer);
        await writeProgress();
        const cancelled = abort.signal.aborted;
        const error =
          err instanceof FdError
            ? { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
            : { code: 'FD_INTERNAL', message: err instanceof Error ? err.message : String(err) };
        if (!(err instanceof FdError))
          this.log.error('task failed with a bug', { id, err: String((err as Error)?.stack ?? err) });
        await this.finish(
          id,
          cancelled ? 'cancelled' : 'failed',
          undefined,
          cancelled ? { code: 'FD_TASK_CANCELLED', message: 'cancelled on request' } : error,
        );
      } finally {
        this.local.delete(id);
      }
    })();
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
    return rec;
  }

  private async finish(id: string, state: TaskState, result?: unknown, error?: TaskRecord['error']): Promise<void> {
    await this.store.mutate<TaskRecord>(`tasks/${id}`, (cur) => ({
      ...cur,
      state,
      result: result ?? null,
      error: error ?? null,
      finishedAt: new Date().toISOString(),
      ...(state === 'succeeded' && cur.progress
        ? { progress: { ...cur.progress, done: cur.progress.total, etaS: 0 } }
        : {}),
    }));
  }

  async get(id: string): Promise<TaskRecord> {
    const t = await this.store.get<TaskRecord>(`tasks/${id}`);
    if (!t) throw new FdError('FD_TASK_NOT_FOUND', `no task ${id}`, { hint: 'list tasks with "flightdeck task list"' });
    return t.value;
  }

  async list(): Promise<TaskRecord[]> {
    return (await this.store.list<TaskRecord>('tasks/')).map((t) => t.value).reverse();
  }

  async cancel(id: string): Promise<TaskRecord> {
    const t = await this.store.mutate<TaskRecord>(`tasks/${id}`, (cur) => {
      if (isFinished(cur.state))
        throw new FdError('FD_TASK_FINISHED', `task ${id} already ${cur.state}`, { status: 409 });
      return { ...cur, cancelRequested: true };
    });
    this.local.get(id)?.abort(new FdError('FD_TASK_CANCELLED', 'cancelled'));
    return t.value;
  }

  /** Resolves with the task once it has finished (or with its current state at the timeout). */
  async wait(id: string, timeoutMs = 3_600_000): Promise<TaskRecord> {
    let resolveFn!: (t: TaskRecord) => void;
    const done = new Promise<TaskRecord>((r) => (resolveFn = r));
    const stop = await this.store.watch<TaskRecord>(`tasks/${id}`, (e) => {
      if (e.type === 'put' && isFinished(e.value.state)) resolveFn(e.value);
    });
    try {
      const cur = await this.get(id);
      if (isFinished(cur.state)) return cur;
      const timer = new Promise<TaskRecord>((r) => setTimeout(() => void this.get(id).then(r), timeoutMs).unref());
      return await Promise.race([done, timer]);
    } finally {
      await stop();
    }
  }

  /** Keeps the newest KEEP_TASKS finished tasks. */
  async prune(): Promise<void> {
    const all = await this.store.list<TaskRecord>('tasks/');
    const finished = all.filter((t) => isFinished(t.value.state));
    for (const t of finished.slice(0, Math.max(0, finished.length - KEEP_TASKS))) await this.store.remove(t.key);
  }

  /** Waits for local work to settle (daemon shutdown). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    await this.close();
  }

  /** Stops following the store without waiting for local work. */
  async close(): Promise<void> {
    await this.stopWatch?.();
    this.stopWatch = undefined;
  }
}
