/**
 * A handler does the work of one contract, typed by it: an operation's handler gets the parsed
 * input and returns what the contract's output describes; a task operation's handler checks
 * first (its errors are answered before any task exists) and returns the task's work, or says
 * the task was started on another host (a VM created where placement put it).
 */
import type { z } from 'zod';
import type { Contract } from '../core/contract.js';
import type { TaskHandle, TaskRecord, TaskTarget } from '../cluster/state/tasks.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Services } from './services.js';

export interface OpContext {
  svc: Services;
  /** Name of the token the caller used. */
  caller: string;
  /** Its role (handlers whose permission depends on the input check it). */
  role: TokenRecord['role'];
}

export interface TaskPlan<R> {
  title: string;
  target: TaskTarget | null;
  work(t: TaskHandle): Promise<R>;
}

/** The task runs on another host already; this is its record (tasks are visible from any host). */
export interface StartedElsewhere {
  startedElsewhere: TaskRecord;
}

export interface Binding {
  contract: Contract;
  /** For a task contract, resolves with a TaskPlan or StartedElsewhere. */
  run(ctx: OpContext, input: Record<string, unknown>): Promise<unknown>;
}

/**
 * What a handler may return for output schema O. A loose object in a contract means "at least
 * these fields" (records with more in them), so a handler returns anything that has them.
 */
type Out<O extends z.ZodType> =
  O extends z.ZodObject<infer S, z.core.$loose>
    ? { [K in keyof S]: S[K] extends z.ZodType ? z.output<S[K]> : never }
    : O extends z.ZodArray<infer E extends z.ZodType>
      ? Out<E>[]
      : O extends z.ZodNullable<infer N extends z.ZodType>
        ? Out<N> | null
        : z.input<O> | z.output<O>;

export function handle<I extends z.ZodObject, O extends z.ZodType>(
  contract: Contract<I, O>,
  run: (ctx: OpContext, input: z.output<I>) => Promise<Out<O>>,
): Binding {
  if (contract.task) throw new Error(`${contract.name} is a task: bind it with handleTask`);
  return { contract, run: (ctx, input) => run(ctx, input as z.output<I>) };
}

export function handleTask<I extends z.ZodObject, O extends z.ZodType>(
  contract: Contract<I, O>,
  plan: (ctx: OpContext, input: z.output<I>) => Promise<TaskPlan<Out<O>> | StartedElsewhere>,
): Binding {
  if (!contract.task) throw new Error(`${contract.name} is not a task: bind it with handle`);
  return { contract, run: (ctx, input) => plan(ctx, input as z.output<I>) };
}

export const isStartedElsewhere = (p: unknown): p is StartedElsewhere =>
  typeof p === 'object' && p !== null && 'startedElsewhere' in p;
