/**
 * Serial console over a WebSocket: /api/v1/vms/:id/console relays bytes between the client
 * and the VM's serial unix socket (never a TCP port on the VM side). The CLI's `vm console`
 * and the browser terminal both use it.
 */
import { connect } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { WebSocketServer } from 'ws';
import type { TokenRecord } from '../cluster/tokens.js';
import { toErrorReply } from './errors.js';
import type { Permission } from './operation.js';
import type { Services } from './services.js';

export function registerConsole(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  const wss = new WebSocketServer({ noServer: true });
  app.server.on('upgrade', (req, socket, head) => {
    const m = /^\/api\/v1\/vms\/([^/?]+)\/console(?:\?.*)?$/.exec(req.url ?? '');
    if (!m) {
      socket.destroy();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://x');
    const fakeReq = { headers: req.headers, query: Object.fromEntries(url.searchParams) } as unknown as FastifyRequest;
    void (async () => {
      try {
        await requireAuth(fakeReq, 'write');
        const vm = await svc.vms.get(decodeURIComponent(m[1]!));
        const path = await svc.agent.serialSocket(vm.id);
        wss.handleUpgrade(req, socket, head, (ws) => {
          const serial = connect(path);
          serial.on('data', (b) => ws.send(b));
          serial.on('close', () => ws.close(1000, 'console closed'));
          serial.on('error', () => ws.close(1011, 'console unavailable'));
          ws.on('message', (data) => serial.write(data as Buffer));
          ws.on('close', () => serial.destroy());
        });
      } catch (err) {
        const r = toErrorReply(err);
        socket.end(
          `HTTP/1.1 ${r.status} Error\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify(r.body)}`,
        );
      }
    })();
  });
}
