/**
 * The WebSocket side of a VM's consoles: one upgrade handler for every channel (the serial
 * console, the VNC console), so that each path is matched once and anything else is refused.
 * A channel relays bytes between the client and a unix socket of the VM's QEMU, on the host
 * that owns the VM; a connection that lands on another host is relayed there (host to host,
 * with this host's own token, after the ticket was checked here).
 *
 * Auth: `?ticket=` (a console ticket, see console-tickets.ts; what browsers use) or an
 * `Authorization: Bearer` header (the CLI). A refusal is answered as a plain HTTP error with
 * the API's JSON body, before any upgrade.
 */
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import WebSocket, { WebSocketServer } from 'ws';
import { FdError } from '../core/errors.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { VmView } from '../cluster/state/vms.js';
import { toErrorReply } from './errors.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';
import type { ConsoleTickets } from './console-tickets.js';

export interface Channel {
  /** Last path segment: /api/v1/vms/{id}/{name}. */
  name: string;
  /** The unix socket on the owning host. */
  socket(svc: Services, vmId: string): Promise<string>;
}

type RequireAuth = (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>;

const FORWARDED = 'x-flightdeck-forwarded-by';
/** Close code when QEMU's side ended (VM stopped, or moved by a live migration). */
export const CLOSE_VM_GONE = 4000;

export function registerConsoleChannels(
  app: FastifyInstance,
  svc: Services,
  requireAuth: RequireAuth,
  tickets: ConsoleTickets,
  channels: Channel[],
): void {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const byName = new Map(channels.map((c) => [c.name, c]));
  let peerToken: string | undefined;
  const hostToken = async (): Promise<string> =>
    (peerToken ??= (await readFile(join(svc.dataDir, 'token'), 'utf8')).trim());

  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/api\/v1\/vms\/([^/]+)\/([a-z]+)$/.exec(url.pathname);
    const channel = m ? byName.get(m[2]!) : undefined;
    if (!m || !channel) {
      refuse(socket, new FdError('FD_ROUTE_NOT_FOUND', `no WebSocket at ${url.pathname}`, { status: 404 }));
      return;
    }
    // Every console opened (or refused) is in the audit log, like every change.
    const audit = (result: { status: number; code?: string }, who: string | null, vm?: VmView): void => {
      const relayedBy = req.headers[FORWARDED];
      void svc.audit.record({
        tokenId: null,
        tokenName: who,
        role: null,
        source: req.socket.remoteAddress ?? '',
        ...(typeof relayedBy === 'string' ? { relayedBy } : {}),
        operation: `console.${channel.name}`,
        target: vm ? { kind: 'vm', id: vm.id, name: vm.name } : { kind: 'vm', ref: decodeURIComponent(m[1]!) },
        result,
      });
    };
    void (async () => {
      try {
        const vm = await svc.vms.get(decodeURIComponent(m[1]!));
        const ticket = url.searchParams.get('ticket');
        let who: string;
        if (ticket !== null) {
          who = (await tickets.redeem(ticket, vm.id)).caller;
        } else {
          const fake = { headers: req.headers, query: {} } as unknown as FastifyRequest;
          who = (await requireAuth(fake, 'write')).name;
        }
        if (vm.state !== 'running' && vm.state !== 'paused') {
          throw new FdError('FD_VM_NOT_RUNNING', `VM ${vm.name} is ${vm.state}: it has no console now`, {
            hint: 'start it; the console reconnects when it runs',
            status: 409,
          });
        }
        const forwardedBy = req.headers[FORWARDED];
        if (vm.host !== svc.hostName) {
          if (forwardedBy)
            throw new FdError('FD_OWNER_MOVED', `host ${vm.host} owns VM ${vm.name} now`, {
              hint: 'connect again',
              status: 409,
            });
          const upstream = await openUpstream(svc, vm, channel.name, await hostToken(), who);
          wss.handleUpgrade(req, socket, head, (ws) => {
            svc.log.info('console opened', { vm: vm.name, channel: channel.name, caller: who, via: vm.host });
            audit({ status: 101 }, who, vm);
            pipeSockets(ws, upstream);
          });
          return;
        }
        const path = await channel.socket(svc, vm.id);
        const local = connect(path);
        await new Promise<void>((resolve, reject) => {
          local.once('connect', () => resolve());
          local.once('error', (err) =>
            reject(
              new FdError('FD_CONSOLE_UNAVAILABLE', `the ${channel.name} console of ${vm.name} is not available`, {
                hint: 'the VM may be stopping or moving; connect again',
                status: 409,
                cause: err,
              }),
            ),
          );
        });
        wss.handleUpgrade(req, socket, head, (ws) => {
          audit({ status: 101 }, who, vm);
          svc.log.info('console opened', {
            vm: vm.name,
            channel: channel.name,
            caller: who,
            ...(forwardedBy ? { from: String(forwardedBy) } : {}),
          });
          local.on('data', (b) => ws.send(b));
          local.on('close', () => ws.close(CLOSE_VM_GONE, 'console closed'));
          local.on('error', () => ws.close(CLOSE_VM_GONE, 'console closed'));
          ws.on('message', (data) => local.write(data as Buffer));
          ws.on('close', () => local.destroy());
        });
      } catch (err) {
        const r = toErrorReply(err);
        audit({ status: r.status, code: r.body.error.code }, null, undefined);
        refuse(socket, err);
      }
    })();
  });
}

/** The same channel on the VM's owner, opened with this host's token. */
async function openUpstream(
  svc: Services,
  vm: VmView,
  channel: string,
  token: string,
  caller: string,
): Promise<WebSocket> {
  const owner = svc.hosts.view(vm.host);
  if (!owner || owner.state === 'lost')
    throw new FdError('FD_HOST_UNREACHABLE', `host ${vm.host}, which runs ${vm.name}, is not reachable`, {
      status: 503,
    });
  const upstream = new WebSocket(owner.apiUrl.replace(/^http/, 'ws') + `/api/v1/vms/${vm.id}/${channel}`, {
    headers: { authorization: `Bearer ${token}`, [FORWARDED]: svc.hostName, 'x-flightdeck-caller': caller },
    perMessageDeflate: false,
    ...(owner.certPem ? { ca: owner.certPem } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    // Paused until the client's side is upgraded too: the first bytes of a console come at
    // once (QEMU's RFB greeting) and would be lost before pipeSockets listens for them.
    upstream.once('open', () => {
      upstream.pause();
      resolve();
    });
    upstream.once('unexpected-response', (_r, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        const e = (JSON.parse(body || '{}') as { error?: { code?: `FD_${string}`; message?: string; hint?: string } })
          .error;
        reject(
          new FdError(e?.code ?? 'FD_HOST_UNREACHABLE', e?.message ?? `console relay to ${vm.host} refused`, {
            status: res.statusCode ?? 502,
            ...(e?.hint ? { hint: e.hint } : {}),
          }),
        );
      });
    });
    upstream.once('error', (err) =>
      reject(new FdError('FD_HOST_UNREACHABLE', `console relay to ${vm.host}: ${err.message}`, { status: 503 })),
    );
  });
  return upstream;
}

function pipeSockets(client: WebSocket, upstream: WebSocket): void {
  upstream.on('message', (d: Buffer) => client.send(d));
  client.on('message', (d: Buffer) => upstream.send(d));
  upstream.on('close', (code) => client.close(code === CLOSE_VM_GONE ? CLOSE_VM_GONE : 1000, 'console closed'));
  client.on('close', () => upstream.close());
  upstream.on('error', () => client.close(CLOSE_VM_GONE, 'console closed'));
  upstream.resume();
}

function refuse(socket: Duplex, err: unknown): void {
  const r = toErrorReply(err);
  const body = JSON.stringify(r.body);
  socket.end(
    `HTTP/1.1 ${r.status} Error\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}
