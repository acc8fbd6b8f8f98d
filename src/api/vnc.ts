/**
 * The graphical console: `/api/v1/vms/{id}/vnc` is a WebSocket carrying RFB between the client
 * (noVNC in the browser, `flightdeck vm vnc`) and the VM's QEMU VNC server, which listens only
 * on a unix socket in the VM's run dir. `GET /api/v1/vms/{id}/screenshot` is the screen now as
 * a PNG (QMP screendump), for the UI's thumbnails. Both run on the VM's owner host.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';
import type { Channel } from './ws-relay.js';
import { forwardTo } from './forward.js';

export const vncChannel: Channel = { name: 'vnc', socket: (svc, id) => svc.runtime.vncSocket(id) };

export function registerScreenshot(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.get('/api/v1/vms/:id/screenshot', async (req, reply) => {
    await requireAuth(req, 'read');
    const vm = await svc.vms.get((req.params as { id: string }).id);
    if (vm.host !== svc.hostName) {
      if (req.headers['x-flightdeck-forwarded-by'])
        throw new FdError('FD_OWNER_MOVED', `host ${vm.host} owns VM ${vm.name} now`, {
          hint: 'try again',
          status: 409,
        });
      const fwd = await forwardTo(svc, vm.host, req);
      if (fwd.headers['content-type']) void reply.type(fwd.headers['content-type']);
      return reply.status(fwd.status).header('cache-control', 'no-store').send(fwd.body);
    }
    if (vm.state !== 'running' && vm.state !== 'paused')
      throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}: there is no screen to show`, {
        hint: 'start it first',
        status: 409,
      });
    const png = await svc.runtime.screenshot(vm.id);
    return reply.type('image/png').header('cache-control', 'no-store').send(png);
  });
}
