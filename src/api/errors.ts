/** Maps anything thrown in a request to a JSON error body with a stable code and a status. */
import type { z } from 'zod';
import { FdError } from '../core/errors.js';

export interface ErrorBody {
  error: { code: string; message: string; hint?: string; details?: unknown };
}

export function badInput(issues: z.core.$ZodIssue[]): FdError {
  const problems = issues.map((i) => `${i.path.length ? i.path.join('.') : '(input)'}: ${i.message}`);
  return new FdError('FD_BAD_REQUEST', `invalid input: ${problems.join('; ')}`, {
    hint: 'fix the fields named above; see /api/v1/openapi.json for the schema',
    details: problems,
  });
}

export function toErrorReply(err: unknown): { status: number; body: ErrorBody; bug: boolean } {
  if (err instanceof FdError) return { status: err.status, body: { error: err.toJSON() }, bug: false };
  const e = err as { statusCode?: number; code?: string; message?: string };
  // Fastify's own client errors (malformed JSON, wrong content type, body too large).
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const code =
      e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? 'FD_BAD_CONTENT_TYPE'
        : e.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'FD_BODY_TOO_LARGE'
          : 'FD_BAD_JSON';
    return {
      status: e.statusCode,
      body: {
        error: {
          code,
          message: e.message ?? 'bad request',
          hint: 'send a JSON object body with Content-Type: application/json',
        },
      },
      bug: false,
    };
  }
  return {
    status: 500,
    body: {
      error: {
        code: 'FD_INTERNAL',
        message: 'internal error: ' + (e?.message ?? String(err)),
        hint: 'see the daemon log',
      },
    },
    bug: true,
  };
}
