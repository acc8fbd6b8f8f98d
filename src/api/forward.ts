/**
 * Any host answers the API: a call about a VM owned by another host is relayed to that host
 * (same method, path, body and token) and its answer returned as is. Hosts trust each other's
 * self-signed certificates through the PEM each publishes in its host record.
 */
import type { FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import { httpCall } from '../core/http-client.js';
import type { Services } from './services.js';

export interface Forwarded {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** A relayed task can run long (?wait=true waits for it). */
const RELAY_TIMEOUT_MS = 3_600_000;

export async function forwardTo(svc: Services, owner: string, req: FastifyRequest): Promise<Forwarded> {
  const h = svc.hosts.view(owner);
  if (!h) throw new FdError('FD_HOST_NOT_FOUND', `the VM's host ${owner} is not a member of the cluster`);
  if (h.state === 'lost')
    throw new FdError('FD_HOST_UNREACHABLE', `host ${owner}, which owns this VM, is lost`, {
      hint: 'wait for it to come back (or for HA to restart its VMs elsewhere)',
    });
  const hasBody = req.body !== undefined && req.method !== 'GET' && req.method !== 'DELETE';
  const answer = await httpCall({
    method: req.method,
    url: new URL(req.url, h.apiUrl),
    headers: {
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      'x-flightdeck-forwarded-by': svc.hostName,
    },
    ...(hasBody ? { json: req.body } : {}),
    ...(h.certPem ? { ca: h.certPem } : {}),
    timeoutMs: RELAY_TIMEOUT_MS,
    unreachable: { code: 'FD_HOST_UNREACHABLE', what: `host ${owner} at ${h.apiUrl}` },
  });
  const headers: Record<string, string> = {};
  for (const k of ['content-type', 'location']) {
    const v = answer.headers[k];
    if (typeof v === 'string') headers[k] = v;
  }
  return { status: answer.status, headers, body: answer.raw };
}
