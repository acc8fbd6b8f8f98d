/**
 * A small JSON client for lab hosts' APIs and etcd members from the root namespace. Each
 * daemon serves TLS with its own self-signed certificate (it listens beyond localhost), so a
 * call trusts exactly that host's certificate, read from its data dir.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { FdError } from '../core/errors.js';

export interface Endpoint {
  url: string;
  /** PEM the server's certificate must chain to (https only). */
  ca?: string;
  token?: string;
}

export interface HttpAnswer<T> {
  status: number;
  body: T;
}

export function requestJson<T>(
  ep: Endpoint,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 5000,
): Promise<HttpAnswer<T>> {
  const url = new URL(ep.url.replace(/\/$/, '') + path);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const req = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = req(
      url,
      {
        method,
        headers: {
          ...(ep.token ? { authorization: `Bearer ${ep.token}` } : {}),
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
        ...(ep.ca ? { ca: ep.ca } : {}),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // not JSON: keep the text for the caller's error message
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    r.on('error', (err) =>
      reject(
        new FdError('FD_LAB_UNREACHABLE', `cannot reach ${ep.url}: ${err.message}`, {
          hint: 'see "flightdeck lab status" for which hosts are up',
          cause: err,
        }),
      ),
    );
    r.end(payload);
  });
}

/** Like requestJson but only answers; any failure (refused, timeout, TLS) is undefined. */
export async function tryRequestJson<T>(
  ep: Endpoint,
  method: string,
  path: string,
  timeoutMs = 2000,
): Promise<HttpAnswer<T> | undefined> {
  try {
    return await requestJson<T>(ep, method, path, undefined, timeoutMs);
  } catch (err) {
    if (err instanceof FdError && err.code === 'FD_LAB_UNREACHABLE') return undefined;
    throw err;
  }
}
