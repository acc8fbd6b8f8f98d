/**
 * One definition per operation: name, HTTP route, input/output schemas, permission, whether
 * it runs as a task, and its CLI verb. The REST route, the OpenAPI entry and the CLI command
 * are all produced from this object (server.ts, openapi.ts, cli/api-commands.ts).
 */
import { z } from 'zod';
import type { TaskHandle, TaskTarget } from '../cluster/state/tasks.js';
import type { Services } from './services.js';
import type { TokenRecord } from '../cluster/state/tokens.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type Permission = 'read' | 'write' | 'admin';

export interface OpContext {
  svc: Services;
  /** Name of the token the caller used. */
  caller: string;
  /** Its role (operations whose permission depends on the input check it). */
  role: TokenRecord['role'];
}

export interface TaskPlan {
  title: string;
  target: TaskTarget | null;
  work(t: TaskHandle): Promise<unknown>;
}

export interface CliSpec {
  noun: string;
  verb: string;
  /** Input fields taken as positional arguments, in order. */
  args?: string[];
  /** Columns of the human table for list results. */
  columns?: string[];
  /** Short flags and help placeholders for input fields. */
  flags?: Record<string, { short?: string; value?: string }>;
}

/** Where a call must run: the host that owns the object, and fields to add when relaying it. */
export interface Route {
  host: string;
  patch?: Record<string, unknown>;
}

interface OperationBase<I extends z.ZodObject> {
  /**
   * The host that must execute this call (the VM's owner, or the host placement chose); the
   * server relays the call there when it is another host.
   */
  route?: (ctx: OpContext, input: z.output<I>) => Promise<Route | undefined>;
  name: string;
  summary: string;
  http: { method: HttpMethod; path: string };
  input: I;
  permission: Permission;
  cli?: CliSpec;
}

export interface PlainOperation<I extends z.ZodObject, O extends z.ZodType> extends OperationBase<I> {
  task?: false;
  output: O;
  /** HTTP status of a success (200 by default, 201 for creations). */
  status?: number;
  /** Returns data shaped like `output` (the schema documents it in OpenAPI). */
  run(ctx: OpContext, input: z.output<I>): Promise<unknown>;
}

export interface TaskOperation<I extends z.ZodObject> extends OperationBase<I> {
  task: true;
  /** Validates and returns the work; errors here are answered before any task exists. */
  run(ctx: OpContext, input: z.output<I>): Promise<TaskPlan>;
}

export type Operation = PlainOperation<z.ZodObject, z.ZodType> | TaskOperation<z.ZodObject>;

export function defineOperation<I extends z.ZodObject, O extends z.ZodType>(op: PlainOperation<I, O>): Operation {
  return op as unknown as Operation;
}

export function defineTaskOperation<I extends z.ZodObject>(op: Omit<TaskOperation<I>, 'task'>): Operation {
  return { ...op, task: true } as unknown as Operation;
}

/** Names of `:param` segments in a route path. */
export function pathParams(path: string): string[] {
  return [...path.matchAll(/:([a-zA-Z]+)/g)].map((m) => m[1]!);
}

/** Whether the non-path input travels in the query string (GET/DELETE) or a JSON body. */
export const inputInQuery = (m: HttpMethod): boolean => m === 'GET' || m === 'DELETE';
