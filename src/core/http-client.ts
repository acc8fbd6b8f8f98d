/**
 * The one HTTP client of the project, for JSON APIs (the CLI, host-to-host calls, the lab) and
 * for relaying a request as it is (any host answers the API). It trusts a server's certificate
 * through the PEM it is given, puts a deadline on every call, and turns a refused or dead
 * connection into an FdError whose code the caller chooses.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import { FdError, type ErrorCode } from './errors.js';

export interface HttpCall {
  method: string;
  url: string | URL;
  headers?: Record<string, string | number>;
  /** A JSON value (sent as application/json), raw bytes, or a stream (sent as it comes). */
  json?: unknown;
  body?: Buffer | Readable;
  /** PEM the server's certificate must chain to (https). */
  ca?: string;
  /** No answer within this long fails the call. */
  timeoutMs?: number;
  /** The code of the FdError for a connection that fails (refused, reset, timed out). */
  unreachable: { code: ErrorCode; what: string; hint?: string };
}

export interface HttpAnswer<T = unknown> {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body parsed as JSON, or its text when it is not JSON, or null when empty. */
  body: T;
  raw: Buffer;
}

export function httpCall<T = unknown>(c: HttpCall): Promise<HttpAnswer<T>> {
  const url = typeof c.url === 'string' ? new URL(c.url) : c.url;
  const payload = c.json === undefined ? undefined : Buffer.from(JSON.stringify(c.json));
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const timeoutMs = c.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const r = send(
      url,
      {
        method: c.method,
        headers: {
          ...c.headers,
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
        ...(c.ca ? { ca: c.ca } : {}),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (b: Buffer) => chunks.push(b));
        res.on('error', reject);
        res.on('end', () => {
          const raw = Buffer.concat(chunks);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parseBody(raw) as T, raw });
        });
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    r.on('error', (err) =>
      reject(
        new FdError(c.unreachable.code, `cannot reach ${c.unreachable.what}: ${err.message}`, {
          ...(c.unreachable.hint ? { hint: c.unreachable.hint } : {}),
          cause: err,
        }),
      ),
    );
    if (payload) r.end(payload);
    else if (c.body && Buffer.isBuffer(c.body)) r.end(c.body);
    else if (c.body) (c.body as Readable).pipe(r);
    else r.end();
  });
}

function parseBody(raw: Buffer): unknown {
  if (!raw.length) return null;
  const text = raw.toString();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The error an API answered with ({"error": {code, message, hint, details}}), as an FdError. */
export function apiError(answer: HttpAnswer, opts: { prefix?: string; fallbackCode?: ErrorCode } = {}): FdError {
  const e = (answer.body as { error?: { code?: string; message?: string; hint?: string; details?: unknown } } | null)
    ?.error;
  const code =
    e?.code && /^FD_[A-Z0-9_]+$/.test(e.code) ? (e.code as ErrorCode) : (opts.fallbackCode ?? 'FD_API_ERROR');
  return new FdError(code, `${opts.prefix ?? ''}${e?.message ?? `HTTP ${answer.status}`}`, {
    ...(e?.hint ? { hint: e.hint } : {}),
    status: answer.status,
    ...(e?.details === undefined ? {} : { details: e.details }),
  });
}
