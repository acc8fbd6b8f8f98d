/**
 * Live events as Server-Sent Events: VM record and status changes and task progress, fed by
 * store watches so every host streams the whole cluster's events.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from './operation.js';
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
    const stops: (() => Promise<void>)[] = [];
    const watch = async (prefix: string, type: string): Promise<void> => {
      if (!filter.includes(type)) return;
      stops.push(
        await svc.store.watch<unknown>(prefix, (e) =>
          send(type, e.type === 'put' ? { op: 'put', key: e.key, value: e.value } : { op: 'delete', key: e.key }),
        ),
      );
    };
    await watch('vms/', 'vm');
    await watch('status/vms/', 'status');
    await watch('tasks/', 'task');
    // Not in the default set (a client asks for them): mirroring state, and hosts coming and going.
    await watch('protection/', 'protection');
    await watch('hosts/', 'host');
    await watch('alive/', 'host');
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      for (const s of stops) void s();
    });
  });
}
