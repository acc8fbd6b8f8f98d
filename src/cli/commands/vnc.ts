/**
 * `flightdeck vm vnc NAME [--listen 127.0.0.1:5901]`: a local TCP port that any VNC viewer
 * (TigerVNC, Remmina, vncsnapshot) can use, tunnelled through the API's VNC WebSocket. Each
 * viewer connection gets its own WebSocket; the VM's VNC server never listens on TCP itself.
 * Runs until Ctrl-C.
 */
import { createServer, type Socket } from 'node:net';
import WebSocket from 'ws';
import { FdError } from '../../core/errors.js';
import { argString, defineCommand, optString, type CommandDef } from '../command.js';
import { ApiClient } from '../api-client.js';

function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  if (!m || Number(m[3]) > 65535)
    throw new FdError('FD_BAD_LISTEN', `"${s}" is not host:port`, { hint: 'e.g. --listen 127.0.0.1:5901' });
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

export const vncCommands: CommandDef[] = [
  defineCommand({
    noun: 'vm',
    verb: 'vnc',
    summary: "open a local port for a VNC viewer to a VM's graphical console (until Ctrl-C)",
    args: [{ name: 'id', description: 'VM name or id', required: true }],
    options: {
      listen: { type: 'string', value: 'HOST:PORT', description: 'where viewers connect (default 127.0.0.1:5901)' },
    },
    async run(ctx, input) {
      const { host, port } = parseListen(optString(input, 'listen') ?? '127.0.0.1:5901');
      const api = await ApiClient.resolve(ctx.global);
      const vm = (
        await api.ok<{ id: string; name: string; state: string }>(
          'GET',
          `/api/v1/vms/${encodeURIComponent(argString(input, 'id'))}`,
        )
      ).body;
      const viewers = new Set<Socket>();
      const server = createServer((tcp) => {
        viewers.add(tcp);
        tcp.pause();
        const ws = new WebSocket(api.wsUrl(`/api/v1/vms/${vm.id}/vnc`), {
          headers: { authorization: api.authHeader },
          perMessageDeflate: false,
          ...(api.caPem ? { ca: api.caPem } : {}),
        });
        ws.on('open', () => {
          tcp.on('data', (b) => ws.send(b));
          tcp.resume();
        });
        ws.on('message', (d: Buffer) => tcp.write(d));
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            const e = (JSON.parse(body || '{}') as { error?: { code?: string; message?: string } }).error;
            process.stderr.write(`vnc: refused: ${e?.message ?? `HTTP ${res.statusCode}`} (${e?.code ?? '?'})\n`);
            tcp.destroy();
          });
        });
        ws.on('error', (err) => {
          process.stderr.write(`vnc: ${err.message}\n`);
          tcp.destroy();
        });
        ws.on('close', () => tcp.end());
        tcp.on('close', () => {
          viewers.delete(tcp);
          ws.close();
        });
        tcp.on('error', () => ws.close());
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new FdError('FD_BAD_LISTEN', `cannot listen on ${host}:${port}: ${err.message}`, {
              hint: err.code === 'EADDRINUSE' ? 'choose another port with --listen' : 'check --listen',
            }),
          ),
        );
        server.listen(port, host, () => resolve());
      });
      const addr = server.address() as { address: string; port: number };
      const listen = `${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`;
      if (ctx.json) process.stdout.write(JSON.stringify({ vm: vm.name, id: vm.id, listen }) + '\n');
      ctx.say(
        `VNC of ${vm.name} on ${listen}: connect a viewer (e.g. vncviewer ${addr.address}::${addr.port}); Ctrl-C ends`,
      );
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      for (const v of viewers) v.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return undefined;
    },
  }),
];
