/** The OpenAPI 3.1 document, generated from the operation definitions, and a docs page. */
import { z } from 'zod';
import { API_BASE, inputInQuery, pathParams, type Contract } from '../core/contract.js';
import { statusOf } from '../core/error-codes.js';

type JsonSchema = Record<string, unknown> & { properties?: Record<string, unknown>; required?: string[] };

function schemaOf(t: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const s = z.toJSONSchema(t, { io, unrepresentable: 'any' }) as JsonSchema;
  delete s['$schema'];
  return s;
}

const TaskRef = {
  type: 'object',
  description: 'a task; follow its Location, or pass ?wait=true to get it finished',
  properties: {
    id: { type: 'string' },
    state: { type: 'string', enum: ['running', 'succeeded', 'failed', 'cancelled'] },
  },
};

const ErrorSchema = {
  type: 'object',
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', example: 'FD_VM_NOT_FOUND' },
        message: { type: 'string' },
        hint: { type: 'string' },
      },
    },
  },
};

/**
 * The OpenAPI document of a set of contracts: the public one (/api/v1/openapi.json) or the
 * internal host-to-host one (/api/v1/internal/openapi.json, for admins).
 */
export function buildOpenApi(ops: Contract[], version: string, title = 'flightdeck API'): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const op of ops) {
    const oaPath = API_BASE + op.http.path.replace(/:([a-zA-Z]+)/g, '{$1}');
    const params = pathParams(op.http.path);
    const input = schemaOf(op.input, 'input');
    const props = { ...(input.properties ?? {}) };
    const required = new Set(input.required ?? []);
    const parameters: Record<string, unknown>[] = params.map((p) => ({
      name: p,
      in: 'path',
      required: true,
      schema: props[p] ?? { type: 'string' },
    }));
    for (const p of params) delete props[p];
    let requestBody: Record<string, unknown> | undefined;
    if (inputInQuery(op.http.method)) {
      for (const [name, schema] of Object.entries(props))
        parameters.push({ name, in: 'query', required: required.has(name), schema });
    } else if (Object.keys(props).length) {
      requestBody = {
        required: [...required].some((r) => !params.includes(r)),
        content: {
          'application/json': {
            schema: {
              type: 'object',
              properties: props,
              required: [...required].filter((r) => !params.includes(r)),
              additionalProperties: false,
            },
          },
        },
      };
    }
    if (op.task)
      parameters.push({
        name: 'wait',
        in: 'query',
        required: false,
        schema: { type: 'boolean' },
        description: 'wait for the task to finish',
      });
    const responses: Record<string, unknown> = op.task
      ? {
          '202': {
            description: 'task started',
            headers: { Location: { schema: { type: 'string' } } },
            content: { 'application/json': { schema: TaskRef } },
          },
          '200': {
            description: 'task finished (with ?wait=true)',
            content: { 'application/json': { schema: TaskRef } },
          },
        }
      : {
          [String(op.status ?? 200)]: {
            description: 'success',
            content: { 'application/json': { schema: schemaOf(op.output, 'output') } },
          },
        };
    // The codes this operation answers with, each under its status from the error catalog.
    const byStatus = new Map<number, string[]>();
    for (const code of ['FD_BAD_REQUEST', 'FD_UNAUTHORIZED', 'FD_FORBIDDEN', ...op.errors]) {
      const st = statusOf(code);
      byStatus.set(st, [...(byStatus.get(st) ?? []), code]);
    }
    for (const [st, codes] of [...byStatus].sort((a, b) => a[0] - b[0]))
      responses[String(st)] = {
        description: codes.join(', '),
        content: { 'application/json': { schema: ErrorSchema } },
      };
    (paths[oaPath] ??= {})[op.http.method.toLowerCase()] = {
      operationId: op.name,
      summary: op.summary,
      tags: [op.name.split('.')[0]],
      'x-permission': op.permission,
      'x-errors': op.errors,
      ...(op.cli ? { 'x-cli': `flightdeck ${op.cli.noun} ${op.cli.verb}` } : {}),
      parameters,
      ...(requestBody ? { requestBody } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: { title, version, description: 'Every call needs "Authorization: Bearer <token>".' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths,
  };
}

/** A self-contained docs page (no CDN: these machines reach no web) that renders the document. */
export function docsPage(): string {
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>flightdeck API</title><style>
body{font:14px system-ui,sans-serif;margin:1rem auto;max-width:60rem;padding:0 1rem}
.op{border:1px solid #ccc;border-radius:6px;margin:.5rem 0;padding:.5rem}
.m{display:inline-block;min-width:4rem;font-weight:bold}pre{background:#f6f6f6;padding:.5rem;overflow:auto}
</style></head><body><h1>flightdeck API</h1><p>Machine-readable: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.
Every call needs <code>Authorization: Bearer TOKEN</code>.</p><div id="ops">loading…</div>
<script>
fetch('/api/v1/openapi.json').then(r=>r.json()).then(doc=>{
  const root=document.getElementById('ops');root.textContent='';
  for(const [p,methods] of Object.entries(doc.paths)) for(const [m,op] of Object.entries(methods)){
    const d=document.createElement('details');d.className='op';
    const s=document.createElement('summary');s.innerHTML='<span class="m"></span> <code></code> — ';
    s.querySelector('.m').textContent=m.toUpperCase();s.querySelector('code').textContent=p;
    s.append(op.summary+(op['x-cli']?' ('+op['x-cli']+')':''));d.append(s);
    const pre=document.createElement('pre');pre.textContent=JSON.stringify({parameters:op.parameters,requestBody:op.requestBody,responses:op.responses},null,2);
    d.append(pre);root.append(d);
  }
});
</script></body></html>`;
}
