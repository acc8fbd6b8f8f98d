/**
 * The audit hook: every API call that can change something (any method but GET/HEAD/OPTIONS)
 * is recorded when its answer has gone out: who (token id, name, role; the id even of a token
 * that was refused), from where, which operation on what, and how it ended (status, error code,
 * task). It hangs on the server as a whole, not on operations, so a route added any way is
 * audited. Routes fill `req.audit` with what they know better (the operation's name, the
 * resolved target, the task they started); consoles, opened by GET, record themselves.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditActor, AuditEntry } from '../cluster/state/audit.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Services } from './services.js';

export interface RequestAudit {
  operation?: string;
  target?: AuditEntry['target'];
  task?: string;
  code?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    audit?: RequestAudit;
  }
}

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);
const KINDS: Record<string, string> = { vms: 'vm', disks: 'volume', appliances: 'appliance' };

/** The kind of object a route is about and the reference in its path (`/vms/:id/...` -> vm, id). */
export function targetOfRoute(path: string, params: unknown): AuditEntry['target'] {
  const seg = path.replace(/^\/api\/v1/, '').split('/')[1] ?? '';
  if (!seg) return null;
  const kind = KINDS[seg] ?? seg.replace(/s$/, '');
  const p = (params ?? {}) as Record<string, unknown>;
  const ref = [p['id'], p['name'], p['upload']].find((v): v is string => typeof v === 'string');
  return ref === undefined ? { kind } : { kind, ref };
}

/** Who a request came from: its token when it was accepted, else the id its header names. */
export function actorOf(req: FastifyRequest, caller: TokenRecord | undefined): AuditActor {
  if (caller) return { tokenId: caller.id, tokenName: caller.name, role: caller.role };
  const m = /^Bearer\s+fd_([0-9a-f]{12})_/.exec(req.headers.authorization ?? '');
  return { tokenId: m?.[1] ?? null, tokenName: null, role: null };
}

export function registerAudit(app: FastifyInstance, svc: Services): void {
  app.addHook('onResponse', async (req, reply) => {
    if (READS.has(req.method) || !req.url.startsWith('/api/')) return;
    const route = req.routeOptions.url ?? req.url.split('?')[0]!;
    const a = req.audit;
    const relayedBy = req.headers['x-flightdeck-forwarded-by'];
    await svc.audit.record({
      ...actorOf(req, req.caller),
      source: req.ip,
      ...(typeof relayedBy === 'string' ? { relayedBy } : {}),
      operation: a?.operation ?? `${req.method} ${route}`,
      target: a?.target ?? targetOfRoute(route, req.params),
      result: {
        status: reply.statusCode,
        ...(a?.code ? { code: a.code } : {}),
        ...(a?.task ? { task: a.task } : {}),
      },
    });
  });
}

/** Notes the error code of a failed call for its audit record (from the error handler). */
export function noteAuditError(req: FastifyRequest, code: string): void {
  req.audit = { ...req.audit, code };
}
