/**
 * The serial console: /api/v1/vms/:id/console relays bytes between the client and the VM's
 * serial unix socket (never a TCP port on the VM side). The CLI's `vm console` and the
 * browser terminal both use it; ws-relay.ts does the auth and the relay to the owner host.
 */
import type { Channel } from './ws-relay.js';

export const serialChannel: Channel = { name: 'console', socket: (svc, id) => svc.runtime.serialSocket(id) };
