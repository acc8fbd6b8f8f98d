/** `flightdeck serve`: runs the daemon in the foreground until SIGTERM/SIGINT. */
import { defineCommand, optString, type CommandDef } from '../command.js';
import { DEFAULT_DATA_DIR } from '../api-client.js';
import { createLogger } from '../../core/log.js';
import { FdError } from '../../core/errors.js';

// Kept in step with api/daemon.ts; the daemon itself loads lazily so other commands start fast.
const DEFAULT_PORT = 8420;

export const serveCommands: CommandDef[] = [
  defineCommand({
    noun: 'serve',
    verb: '',
    summary: 'run the flightdeck daemon on this host (API, VMs, embedded etcd)',
    options: {
      listen: {
        type: 'string',
        description: `address to listen on (default 127.0.0.1:${DEFAULT_PORT}; TLS beyond localhost)`,
        value: 'HOST:PORT',
      },
      etcd: {
        type: 'string',
        description: 'join an existing etcd (comma-separated URLs) instead of the private one',
        value: 'URL,...',
      },
      'host-name': {
        type: 'string',
        description: 'name of this host in the cluster (default: hostname)',
        value: 'NAME',
      },
      'default-network': {
        type: 'string',
        description: 'default network of a new installation: nat (a free bridge fdbrN on 10.88.N.0/24, DHCP) or user',
        value: 'nat|user',
      },
      'stop-etcd': { type: 'boolean', description: 'also stop the private etcd when the daemon stops' },
    },
    async run(ctx, input) {
      const dataDir = ctx.global.dataDir ?? DEFAULT_DATA_DIR;
      const log = createLogger({ json: true, base: { svc: 'flightdeck' } });
      const etcd = optString(input, 'etcd');
      const net = optString(input, 'default-network');
      if (net !== undefined && net !== 'nat' && net !== 'user') {
        throw new FdError('FD_CLI_BAD_ARGS', `--default-network must be nat or user, not "${net}"`);
      }
      const hostName = optString(input, 'host-name');
      // A daemon must not die of one failed background call (etcd out of reach during a
      // partition rejects them all): log it; the loops that made it retry on their own.
      process.on('unhandledRejection', (err: unknown) =>
        log.error('unhandled rejection', { err: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
      const { startDaemon } = await import('../../api/daemon.js');
      const daemon = await startDaemon({
        dataDir,
        ...(optString(input, 'listen') ? { listen: optString(input, 'listen')! } : {}),
        ...(etcd ? { etcd: etcd.split(',').map((s) => s.trim()) } : {}),
        ...(hostName ? { hostName } : {}),
        defaultNetwork: optString(input, 'default-network') === 'user' ? 'user' : 'nat',
        log,
      });
      process.stdout.write(JSON.stringify({ ready: true, url: daemon.url, dataDir, pid: process.pid }) + '\n');
      await new Promise<void>((resolve) => {
        const stop = (): void => resolve();
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
      log.info('stopping (VMs keep running)');
      await daemon.close({ stopEtcd: input.opts['stop-etcd'] === true });
      return undefined;
    },
  }),
];
