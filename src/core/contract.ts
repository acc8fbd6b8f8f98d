/**
 * An API operation's contract: its name, route, input and output schemas, the errors it
 * answers with, the permission it needs, whether it runs as a task, and whether it is public
 * (in the OpenAPI document and the CLI) or internal (host to host only). A contract holds no
 * code that does the work, so the CLI, the OpenAPI generator and the host-to-host client read
 * it without loading the server; the server binds a handler typed by it.
 */
import type { z } from 'zod';
import type { ErrorCode } from './errors.js';

/** Every route of the API lives under this prefix. */
export const API_BASE = '/api/v1';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type Permission = 'read' | 'write' | 'admin';

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

/**
 * Where a call must run. `owner`: the host that owns the VM named by the input field; `host`:
 * the host named by the field; `first-owner`: the owner of the first VM of a list field (when
 * it names a VM). Without a route the host that receives the call answers it.
 */
export type RouteSpec = { to: 'owner' | 'host' | 'first-owner'; field: string };

export interface Contract<I extends z.ZodObject = z.ZodObject, O extends z.ZodType = z.ZodType> {
  name: string;
  summary: string;
  http: { method: HttpMethod; path: string };
  input: I;
  /** What a call returns; for a task, the task's result. */
  output: O;
  permission: Permission;
  /** Runs as a task: 202 with the task's Location, or the finished task with ?wait=true. */
  task: boolean;
  visibility: 'public' | 'internal';
  /** Codes this operation itself answers with (besides bad input, auth and internal errors). */
  errors: readonly ErrorCode[];
  /** HTTP status of a success: 200 unless given (201 for creations). */
  status?: number;
  route?: RouteSpec;
  cli?: CliSpec;
}

type Defaults = 'task' | 'visibility' | 'errors';

/** A public operation answered at once. */
export function operation<I extends z.ZodObject, O extends z.ZodType>(
  c: Omit<Contract<I, O>, Defaults> & Partial<Pick<Contract<I, O>, 'errors'>>,
): Contract<I, O> {
  return { errors: [], ...c, task: false, visibility: 'public' };
}

/** A public operation that runs as a task; `output` is the task's result. */
export function taskOperation<I extends z.ZodObject, O extends z.ZodType>(
  c: Omit<Contract<I, O>, Defaults> & Partial<Pick<Contract<I, O>, 'errors'>>,
): Contract<I, O> {
  return { errors: [], ...c, task: true, visibility: 'public' };
}

/** A host-to-host step: not in the public OpenAPI document nor the CLI. */
export function internalOperation<I extends z.ZodObject, O extends z.ZodType>(
  c: Omit<Contract<I, O>, Defaults | 'cli'> & Partial<Pick<Contract<I, O>, 'errors'>>,
): Contract<I, O> {
  return { errors: [], ...c, task: false, visibility: 'internal' };
}

/** Names of `:param` segments in a route path. */
export function pathParams(path: string): string[] {
  return [...path.matchAll(/:([a-zA-Z]+)/g)].map((m) => m[1]!);
}

/** Whether the non-path input travels in the query string (GET/DELETE) or a JSON body. */
export const inputInQuery = (m: HttpMethod): boolean => m === 'GET' || m === 'DELETE';

/**
 * The request a call of `c` with `input` makes: the path with its parameters filled in, and
 * the rest of the input as a query string or a JSON body.
 */
export function requestOf(
  c: Contract,
  input: Record<string, unknown>,
): { path: string; body?: Record<string, unknown> } {
  const rest = { ...input };
  let path = c.http.path;
  for (const p of pathParams(c.http.path)) {
    path = path.replace(`:${p}`, encodeURIComponent(String(rest[p])));
    delete rest[p];
  }
  if (!inputInQuery(c.http.method)) return { path: API_BASE + path, body: rest };
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(rest)) {
    if (v === undefined) continue;
    for (const item of Array.isArray(v) ? v : [v]) qs.append(k, String(item));
  }
  const q = qs.toString();
  return { path: API_BASE + path + (q ? `?${q}` : '') };
}
