/**
 * Serial console over a WebSocket: /api/v1/vms/:id/console relays bytes between the client
 * and the VM's serial unix socket (never a TCP port on the VM side). The CLI's `vm console`
 * and the browser terminal both use it.
 */
import { connect } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import WebSocket, { WebSocketServer } from 'ws';
import { FdError } from '../core/errors.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
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
        if (vm.host !== svc.hostName) {
          // The console lives on the VM's host: relay the WebSocket there.
          const owner = (await svc.catalog.listHosts()).find((h) => h.name === vm.host);
          if (!owner || owner.state === 'lost')
            throw new FdError('FD_HOST_UNREACHABLE', `host ${vm.host} is not reachable`, { status: 503 });
          const upstream = new WebSocket(owner.apiUrl.replace(/^http/, 'ws') + `/api/v1/vms/${vm.id}/console`, {
            headers: {
              authorization: req.headers.authorization ?? `Bearer ${url.searchParams.get('access_token') ?? ''}`,
            },
            ...(owner.certPem ? { ca: owner.certPem } : {}),
          });
          await new Promise<void>((resolve, reject) => {
            upstream.once('open', () => resolve());
            upstream.once('error', (err) =>
              reject(
                new FdError('FD_HOST_UNREACHABLE', `console relay to ${vm.host}: ${err.message}`, { status: 503 }),
              ),
            );
          });
          wss.handleUpgrade(req, socket, head, (ws) => {
            upstream.on('message', (d: Buffer) => ws.send(d));
            ws.on('message', (d: Buffer) => upstream.send(d));
            upstream.on('close', () => ws.close());
            ws.on('close', () => upstream.close());
          });
          return;
        }
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
