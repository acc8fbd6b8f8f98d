/**
 * Host-to-host calls inside the cluster (migration steps): JSON over the peer's API with this
 * daemon's own token (tokens live in etcd, so it is valid on every host), trusting the peer's
 * self-signed certificate through the PEM it published in its host record.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { FdError } from '../../core/errors.js';
import type { HostRecord } from '../state/model.js';

export async function callPeer<T>(
  host: HostRecord,
  token: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 120_000,
): Promise<T> {
  const url = new URL(path, host.apiUrl);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const res = await new Promise<{ status: number; body: unknown }>((resolve, reject) => {
    const r = send(
      url,
      {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
        ...(host.certPem ? { ca: host.certPem } : {}),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : null;
          } catch {
            // not JSON; keep the text for the error
          }
          resolve({ status: res.statusCode ?? 502, body: parsed });
        });
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    r.on('error', (err) =>
      reject(
        new FdError('FD_HOST_UNREACHABLE', `cannot reach host ${host.name} at ${host.apiUrl}: ${err.message}`, {
          status: 503,
          cause: err,
        }),
      ),
    );
    if (payload) r.end(payload);
    else r.end();
  });
  if (res.status >= 400) {
    const e = (res.body as { error?: { code?: `FD_${string}`; message?: string; hint?: string } } | null)?.error;
    throw new FdError(
      e?.code ?? 'FD_PEER_ERROR',
      `host ${host.name}: ${e?.message ?? `HTTP ${res.status}`}`,
      e?.hint ? { hint: e.hint } : {},
    );
  }
  return res.body as T;
}
