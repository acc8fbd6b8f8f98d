/**
 * Live events as Server-Sent Events: VM record and status changes, task progress, protection
 * and host changes, fed by the state cache (one watch of the store per daemon, however many
 * clients listen), so every host streams the whole cluster's events.
 */
import type { WatchedKind } from '../cluster/state/state.js';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';

export function registerEvents(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.get('/api/v1/events', async (req, reply) => {
    await requireAuth(req, 'read');
    const filter = String((req.query as Record<string, unknown>)['types'] ?? 'vm,status,task')
      .split(',')
      .map((s) => s.trim());
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': flightdeck events\n\n');
    let seq = 0;
    const send = (type: string, data: unknown): void => {
      res.write(`id: ${++seq}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    const stops: (() => void)[] = [];
    const watch = (kind: WatchedKind, type: string): void => {
      if (!filter.includes(type)) return;
      stops.push(
        svc.state.onChange(kind, (e) =>
          send(type, e.type === 'put' ? { op: 'put', key: e.key, value: e.value } : { op: 'delete', key: e.key }),
        ),
      );
    };
    watch('vms', 'vm');
    watch('vm-statuses', 'status');
    watch('tasks', 'task');
    watch('protection', 'protection');
    watch('hosts', 'host');
    watch('alive', 'host');
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      for (const s of stops) s();
    });
  });
}
