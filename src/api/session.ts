/**
 * `GET /api/v1/session`: who the caller's token is (name, role) and what that role may do, so
 * the web UI shows only the buttons that will work. It says nothing the token's holder does
 * not already know.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';

export function registerSession(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
  allowed: Record<TokenRecord['role'], Permission[]>,
): void {
  app.get('/api/v1/session', async (req) => {
    const rec = await requireAuth(req, 'read');
    return {
      token: { id: rec.id, name: rec.name, role: rec.role },
      permissions: allowed[rec.role],
      host: svc.hostName,
      version: svc.version,
    };
  });
}
