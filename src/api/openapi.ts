/** The OpenAPI 3.1 document, generated from the operation definitions (rendered at /api/docs). */
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
