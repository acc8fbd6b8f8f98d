/**
 * CLI verbs generated from the API's public contracts: arguments and options come from
 * the input schema, the call goes through the REST API, task operations show a progress bar
 * while they wait and exit non-zero when the task failed.
 */
import { z } from 'zod';
import { FdError } from '../core/errors.js';
import type { ProgressSnapshot } from '../core/progress.js';
import { sleep } from '../core/process.js';
import { API_BASE, inputInQuery, pathParams, type Contract } from '../core/contract.js';
import type { TaskRecord } from '../cluster/state/tasks.js';
import type { CliContext, CommandDef, OptionSpec } from './command.js';
import { ApiClient } from './api-client.js';
import { renderDefault, table } from './render.js';
import { RENDERERS } from './render-vm.js';

type Prop = { type?: string | string[]; anyOf?: Prop[]; items?: Prop; description?: string; enum?: unknown[] };

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

/** A boolean that also takes "true"/"false" as text (the operations' flag()): a plain CLI flag. */
const isFlag = (p: Prop): boolean =>
  !!p.anyOf?.length &&
  p.anyOf.every(
    (x) => x.type === 'boolean' || (x.type === 'string' && x.enum?.every((e) => e === 'true' || e === 'false')),
  );

function kindOf(p: Prop): 'boolean' | 'number' | 'array' | 'object' | 'string' {
  if (isFlag(p)) return 'boolean';
  const types = p.anyOf ? p.anyOf.map((x) => x.type) : [p.type];
  if (types.includes('string')) return 'string';
  if (types.includes('boolean')) return 'boolean';
  if (types.includes('integer') || types.includes('number')) return 'number';
  if (types.includes('array')) return 'array';
  if (types.includes('object')) return 'object';
  return 'string';
}

export function isTaskFinished(t: TaskRecord): boolean {
  return t.state !== 'running';
}

/** Follows a task until it ends, drawing its progress; returns the final record. */
export async function followTask(api: ApiClient, ctx: CliContext, task: TaskRecord): Promise<TaskRecord> {
  const bar = ctx.progress(task.title);
  let cur = task;
  let lastLog = 0;
  let cancelling = false;
  while (!isTaskFinished(cur)) {
    if (ctx.signal.aborted && !cancelling) {
      cancelling = true;
      ctx.say(`cancelling task ${cur.id}...`);
      await api.call('POST', `${API_BASE}/tasks/${cur.id}/actions/cancel`);
    }
    await sleep(250);
    cur = (await api.ok<TaskRecord>('GET', `${API_BASE}/tasks/${task.id}`)).body;
    for (const l of cur.log.slice(lastLog)) if (!ctx.json) ctx.say(`  ${l.msg}`);
    lastLog = cur.log.length;
    if (cur.progress && cur.progress.total > 0) bar(cur.progress);
  }
  if (cur.state === 'succeeded' && cur.progress && cur.progress.total > 0) {
    bar({ ...cur.progress, done: cur.progress.total } as ProgressSnapshot);
  }
  return cur;
}

export function commandFromContract(op: Contract): CommandDef | undefined {
  const cli = op.cli;
  if (!cli || op.visibility !== 'public') return undefined;
  const schema = z.toJSONSchema(op.input, { io: 'input', unrepresentable: 'any' }) as {
    properties?: Record<string, Prop>;
    required?: string[];
  };
  const props = schema.properties ?? {};
  const required = new Set(schema.required ?? []);
  const positional = cli.args ?? [];
  const options: Record<string, OptionSpec> = {};
  const optField = new Map<string, string>();
  for (const [field, p] of Object.entries(props)) {
    if (positional.includes(field)) continue;
    const kind = kindOf(p);
    const name = kebab(field);
    optField.set(name, field);
    const flag = cli.flags?.[field];
    options[name] = {
      type: kind === 'boolean' ? 'boolean' : 'string',
      description: (p.description ?? field) + (required.has(field) ? ' (required)' : ''),
      ...(kind === 'array' ? { multiple: true } : {}),
      ...(flag?.short ? { short: flag.short } : {}),
      ...(flag?.value ? { value: flag.value } : p.enum ? { value: p.enum.join('|') } : {}),
    };
  }
  if (op.task) options['no-wait'] = { type: 'boolean', description: 'print the task and return without waiting' };
  return {
    noun: cli.noun,
    verb: cli.verb,
    summary: op.summary,
    args: positional.map((a) => ({
      name: a,
      description: (props[a]?.description as string | undefined) ?? a,
      required: required.has(a),
    })),
    options,
    async run(ctx, input) {
      const body: Record<string, unknown> = {};
      for (const a of positional) if (input.args[a] !== undefined) body[a] = input.args[a];
      for (const [name, field] of optField) {
        const v = input.opts[name];
        if (v === undefined) continue;
        const kind = kindOf(props[field]!);
        if (kind === 'number') {
          const n = Number(v);
          if (!Number.isFinite(n)) throw new FdError('FD_CLI_BAD_ARGS', `--${name} needs a number, not "${String(v)}"`);
          body[field] = n;
        } else if (kind === 'object') {
          try {
            body[field] = JSON.parse(String(v));
          } catch {
            throw new FdError('FD_CLI_BAD_ARGS', `--${name} needs JSON`);
          }
        } else body[field] = v;
      }
      let path = op.http.path;
      for (const p of pathParams(op.http.path)) {
        path = path.replace(`:${p}`, encodeURIComponent(String(body[p])));
        delete body[p];
      }
      const api = await ApiClient.resolve(ctx.global);
      let url = API_BASE + path;
      let payload: unknown;
      if (inputInQuery(op.http.method)) {
        const qs = new URLSearchParams();
        for (const [k, v] of Object.entries(body)) {
          for (const item of Array.isArray(v) ? v : [v]) qs.append(k, String(item));
        }
        if ([...qs].length) url += '?' + qs.toString();
      } else payload = body;
      const res = await api.ok<unknown>(op.http.method, url, payload);
      if (!op.task) return res.body;
      const task = res.body as TaskRecord;
      if (input.opts['no-wait']) return task;
      return followTask(api, ctx, task);
    },
    render: (result: unknown) => {
      if (op.task && result && typeof result === 'object' && 'state' in result && 'operation' in result) {
        const t = result as TaskRecord;
        if (t.state === 'running')
          return `task ${t.id} started: ${t.title} (follow with "flightdeck task wait ${t.id}")`;
        if (t.state !== 'succeeded')
          return `task ${t.id} ${t.state}: ${t.error?.message ?? ''}${t.error?.hint ? `\n  hint: ${t.error.hint}` : ''}${t.error ? `\n  code: ${t.error.code}` : ''}`;
        const r = t.result;
        return r && typeof r === 'object' ? renderDefault(r) : `${t.title}: done`;
      }
      if (Array.isArray(result) && cli.columns) return table(result as Record<string, unknown>[], cli.columns);
      const custom = RENDERERS[op.name];
      if (custom && result && typeof result === 'object') return custom(result);
      return renderDefault(result);
    },
    exitCode: (result: unknown) =>
      op.task &&
      result &&
      typeof result === 'object' &&
      'state' in result &&
      (result as TaskRecord).state !== 'succeeded' &&
      (result as TaskRecord).state !== 'running'
        ? 1
        : 0,
  };
}
