/**
 * Host-to-host calls, by contract: the path comes from the contract, the answer is checked
 * against its output schema. A call carries this daemon's own token (tokens live in etcd, so it
 * is valid on every host) and trusts the peer's self-signed certificate through the PEM the
 * peer published in its host record.
 */
import type { z } from 'zod';
import { requestOf, type Contract } from '../../core/contract.js';
import { FdError } from '../../core/errors.js';
import { apiError, httpCall } from '../../core/http-client.js';
import type { HostRecord } from '../state/model.js';

export interface PeerClientOptions {
  token: string;
  /** The host record of a host by name (the cluster's view of its API URL and certificate). */
  host: (name: string) => Promise<HostRecord | undefined>;
}

const DEFAULT_TIMEOUT_MS = 120_000;

/** What the cluster's code needs of host-to-host calls (a test puts a scripted one in its place). */
export interface Peers {
  call<I extends z.ZodObject, O extends z.ZodType>(
    to: string | HostRecord,
    c: Contract<I, O>,
    input: z.input<I>,
    opts?: { timeoutMs?: number },
  ): Promise<z.output<O>>;
}

export class PeerClient implements Peers {
  constructor(private readonly o: PeerClientOptions) {}

  async call<I extends z.ZodObject, O extends z.ZodType>(
    to: string | HostRecord,
    c: Contract<I, O>,
    input: z.input<I>,
    opts: { timeoutMs?: number } = {},
  ): Promise<z.output<O>> {
    const host = typeof to === 'string' ? await this.o.host(to) : to;
    if (!host) throw new FdError('FD_HOST_NOT_FOUND', `no host ${String(to)} in the cluster`);
    const { path, body } = requestOf(c, input as Record<string, unknown>);
    const answer = await httpCall({
      method: c.http.method,
      url: new URL(path, host.apiUrl),
      headers: { authorization: `Bearer ${this.o.token}` },
      ...(body ? { json: body } : {}),
      ...(host.certPem ? { ca: host.certPem } : {}),
      timeoutMs: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      unreachable: { code: 'FD_HOST_UNREACHABLE', what: `host ${host.name} at ${host.apiUrl}` },
    });
    if (answer.status >= 400) throw apiError(answer, { prefix: `host ${host.name}: `, fallbackCode: 'FD_PEER_ERROR' });
    const parsed = c.output.safeParse(answer.body);
    if (!parsed.success)
      throw new FdError('FD_PEER_BAD_ANSWER', `host ${host.name} answered ${c.name} with an unexpected shape`, {
        details: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`),
      });
    return parsed.data;
  }
}
