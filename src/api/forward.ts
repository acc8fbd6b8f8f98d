/**
 * Any host answers the API: a call about a VM owned by another host is relayed to that host
 * (same method, path, body and token) and its answer returned as is. Hosts trust each other's
 * self-signed certificates through the PEM each publishes in its host record.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import type { HostRecord } from '../cluster/state/model.js';
import type { Services } from './services.js';

export interface Forwarded {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export async function forwardTo(svc: Services, owner: string, req: FastifyRequest): Promise<Forwarded> {
  const hosts = await svc.catalog.listHosts();
  const h = hosts.find((x) => x.name === owner) as (HostRecord & { certPem?: string }) | undefined;
  if (!h)
    throw new FdError('FD_HOST_NOT_FOUND', `the VM's host ${owner} is not a member of the cluster`, { status: 409 });
  if (h.state === 'lost') {
    throw new FdError('FD_HOST_UNREACHABLE', `host ${owner}, which owns this VM, is lost`, {
      hint: 'wait for it to come back (or for HA to restart its VMs elsewhere)',
      status: 503,
    });
  }
  const url = new URL(req.url, h.apiUrl);
  const payload =
    req.body === undefined || req.method === 'GET' || req.method === 'DELETE'
      ? undefined
      : Buffer.from(JSON.stringify(req.body));
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = send(
      url,
      {
        method: req.method,
        headers: {
          ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
          'x-flightdeck-forwarded-by': svc.hostName,
          ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
        },
        ...(h.certPem ? { ca: h.certPem } : {}),
        timeout: 3_600_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const headers: Record<string, string> = {};
          for (const k of ['content-type', 'location']) {
            const v = res.headers[k];
            if (typeof v === 'string') headers[k] = v;
          }
          resolve({ status: res.statusCode ?? 502, headers, body: Buffer.concat(chunks) });
        });
      },
    );
    r.on('error', (err) =>
      reject(
        new FdError('FD_HOST_UNREACHABLE', `cannot reach host ${owner} at ${h.apiUrl}: ${err.message}`, {
          status: 503,
          cause: err,
        }),
      ),
    );
    if (payload) r.end(payload);
    else r.end();
  });
}
