/**
 * `flightdeck vm console NAME`: the VM's serial console in this terminal, through the API's
 * WebSocket relay. Ctrl-] detaches, as with telnet and virsh.
 */
import WebSocket from 'ws';
import { FdError } from '../../core/errors.js';
import { argString, defineCommand, type CommandDef } from '../command.js';
import { ApiClient } from '../api-client.js';

const DETACH = 0x1d; // Ctrl-]

export const consoleCommands: CommandDef[] = [
  defineCommand({
    noun: 'vm',
    verb: 'console',
    summary: "attach to a VM's serial console (detach with Ctrl-])",
    args: [{ name: 'id', description: 'VM name or id', required: true }],
    async run(ctx, input) {
      const api = await ApiClient.resolve(ctx.global);
      const vm = (
        await api.ok<{ id: string; name: string }>('GET', `/api/v1/vms/${encodeURIComponent(argString(input, 'id'))}`)
      ).body;
      const ws = new WebSocket(api.wsUrl(`/api/v1/vms/${vm.id}/console`), {
        headers: { authorization: api.authHeader },
        ...(api.caPem ? { ca: api.caPem } : {}),
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => {
            const e = (
              JSON.parse(body || '{}') as { error?: { code?: `FD_${string}`; message?: string; hint?: string } }
            ).error;
            reject(
              new FdError(
                e?.code ?? 'FD_CONSOLE_REFUSED',
                e?.message ?? `console refused (HTTP ${res.statusCode})`,
                e?.hint ? { hint: e.hint } : {},
              ),
            );
          });
        });
        ws.once('error', (err) => reject(new FdError('FD_DAEMON_UNREACHABLE', `console: ${err.message}`)));
      });
      process.stderr.write(`connected to ${vm.name} (detach with Ctrl-])\r\n`);
      const stdin = process.stdin;
      if (stdin.isTTY) stdin.setRawMode(true);
      stdin.resume();
      await new Promise<void>((resolve) => {
        ws.on('message', (data: Buffer) => process.stdout.write(data));
        ws.on('close', () => resolve());
        stdin.on('data', (b: Buffer) => {
          const i = b.indexOf(DETACH);
          if (i >= 0) {
            if (i > 0) ws.send(b.subarray(0, i));
            ws.close();
            resolve();
          } else ws.send(b);
        });
        stdin.on('end', () => {
          ws.close();
          resolve();
        });
      });
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\r\ndetached\r\n');
      return undefined;
    },
  }),
];
