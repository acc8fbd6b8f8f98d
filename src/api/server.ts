/**
 * The HTTP server: every operation's route generated from its definition, bearer-token auth on
 * every call, JSON errors with stable codes, the OpenAPI document, Server-Sent Events and
 * Prometheus metrics. Listens on localhost unless told otherwise (then with TLS).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import { logContext } from '../core/log.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import { toErrorReply } from './errors.js';
import type { Permission } from '../core/contract.js';
import { bindings as allBindings } from './handlers/index.js';
import type { Binding } from './handler.js';
import { registerRoutes } from './routes.js';
import { buildOpenApi } from './openapi.js';
import { registerDocs } from './docs.js';
import type { Services } from './services.js';
import { registerEvents } from './events.js';
import { Metrics, registerMetrics } from './metrics.js';
import { serialChannel } from './console.js';
import { registerUpload } from './upload.js';
import { registerConsoleChannels } from './ws-relay.js';
import { ConsoleTickets } from './console-tickets.js';
import { registerScreenshot, vncChannel } from './vnc.js';
import { registerSession } from './session.js';
import { registerWebUi } from './web-ui.js';
import { registerApplianceUpload } from './appliance-upload.js';
import { noteAuditError, registerAudit } from './audit-hook.js';

const ALLOWED: Record<TokenRecord['role'], Permission[]> = {
  admin: ['read', 'write', 'admin'],
  operator: ['read', 'write'],
  viewer: ['read'],
};

declare module 'fastify' {
  interface FastifyRequest {
    caller?: TokenRecord;
  }
}

export interface ServerOptions {
  tls?: { key: string; cert: string };
  /** Where the built web UI is (dist/web by default). */
  webRoot?: string;
}

/** A client's X-Request-Id when it is a sane token (so logs of both sides match), else a new one. */
function requestId(req: IncomingMessage): string {
  const h = req.headers['x-request-id'];
  return typeof h === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(h) ? h : randomUUID();
}

export async function authenticate(svc: Services, req: FastifyRequest): Promise<TokenRecord> {
  // Only a header: a token in a URL ends up in logs and history (browsers' WebSockets use
  // console tickets instead, see console-tickets.ts).
  const header = req.headers.authorization;
  const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
  if (!token) {
    throw new FdError('FD_UNAUTHORIZED', 'this call needs an API token', {
      hint: 'send "Authorization: Bearer <token>"; the local token is in DATA_DIR/token',
    });
  }
  const rec = await svc.tokens.verify(token);
  if (!rec)
    throw new FdError('FD_UNAUTHORIZED', 'the API token is not valid (revoked or mistyped)', {
      hint: 'create a new one with "flightdeck token create"',
    });
  return rec;
}

export async function createServer(
  svc: Services,
  opts: ServerOptions = {},
  bindings: Binding[] = allBindings,
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    genReqId: requestId,
    bodyLimit: 4 * 1024 * 1024,
    ...(opts.tls ? { https: { key: opts.tls.key, cert: opts.tls.cert } } : {}),
  }) as unknown as FastifyInstance;
  const metrics = new Metrics();

  app.setErrorHandler((err, req, reply) => {
    const r = toErrorReply(err);
    noteAuditError(req, r.body.error.code);
    if (r.bug) svc.log.error('request failed with a bug', { err: String((err as Error).stack ?? err) });
    void reply.status(r.status).send(r.body);
  });
  const webFallback = await registerWebUi(app, opts.webRoot);
  app.setNotFoundHandler((req, reply) => {
    if (webFallback(req, reply)) return;
    void reply.status(404).send({
      error: {
        code: 'FD_ROUTE_NOT_FOUND',
        message: `no route ${req.method} ${req.url.split('?')[0]}`,
        hint: 'see /api/v1/openapi.json',
      },
    });
  });
  // Every line logged while a request is handled (and by the tasks it starts) names it.
  app.addHook('onRequest', (req, reply, done) => {
    void reply.header('x-request-id', req.id);
    logContext.run({ reqId: req.id }, done);
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unknown';
    metrics.observeRequest(route, req.method, reply.statusCode, reply.elapsedTime);
    const line = { method: req.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (reply.statusCode >= 500) svc.log.warn('request failed', line);
    else svc.log.debug('request', line);
  });

  registerAudit(app, svc);

  const requireAuth = async (req: FastifyRequest, perm: Permission): Promise<TokenRecord> => {
    const rec = await authenticate(svc, req);
    req.caller = rec; // known even when refused below: the audit record names it
    if (!ALLOWED[rec.role].includes(perm)) {
      throw new FdError('FD_FORBIDDEN', `token "${rec.name}" (${rec.role}) may not do this (${perm})`, {
        hint: 'use a token with a stronger role',
      });
    }
    req.caller = rec;
    return rec;
  };

  registerRoutes(app, svc, bindings, requireAuth);

  // Internal routes are served but only the internal document, for admins, describes them.
  const openapi = buildOpenApi(
    bindings.map((b) => b.contract).filter((c) => c.visibility === 'public'),
    svc.version,
  );
  const internal = buildOpenApi(
    bindings.map((b) => b.contract).filter((c) => c.visibility === 'internal'),
    svc.version,
    'flightdeck internal host-to-host API',
  );
  app.get('/api/v1/openapi.json', async () => openapi);
  app.get('/api/v1/internal/openapi.json', async (req) => {
    await requireAuth(req, 'admin');
    return internal;
  });
  registerDocs(app);
  app.get('/api/v1/health', async () => ({ ok: true, host: svc.hostName, version: svc.version }));
  registerEvents(app, svc, requireAuth);
  registerMetrics(app, svc, metrics, requireAuth);
  registerConsoleChannels(app, svc, requireAuth, new ConsoleTickets(svc.store), [serialChannel, vncChannel]);
  registerScreenshot(app, svc, requireAuth);
  registerSession(app, svc, requireAuth, ALLOWED);
  registerUpload(app, svc, requireAuth);
  registerApplianceUpload(app, svc, requireAuth);
  return app;
}
