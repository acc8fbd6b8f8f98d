/**
 * `flightdeck disk serve|mount|unmount`: the vdisk data path from the command line.
 * `serve` runs in the foreground until SIGTERM/SIGINT (the VM runner starts one per VM, the
 * mount chain starts one detached); it prints one ready line first, JSON with --json, so a
 * parent can wait for it.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FdError } from '../../core/errors.js';
import { createLogger } from '../../core/log.js';
import { openDisk } from '../../disk/open.js';
import { startNbdServer } from '../../disk/nbd/server.js';
import { mountImage, unmountImage, type MountState } from '../../host/mount.js';
import { argString, defineCommand, optBool, optString, type CommandDef } from '../command.js';

export interface ServeReady {
  event: 'ready';
  pid: number;
  image: string;
  socket: string;
  url: string;
  exportName: string;
  sizeBytes: number;
  readOnly: boolean;
}

export interface ServeStopped {
  event: 'stopped';
  signal: string;
  socket: string;
}

const serve = defineCommand<ServeStopped>({
  noun: 'disk',
  verb: 'serve',
  summary: 'serve a disk image over NBD on a unix socket until SIGTERM (the vdisk data path)',
  args: [{ name: 'image', description: 'VHD (any chain) or raw image to serve', required: true }],
  options: {
    socket: { type: 'string', description: 'unix socket path to listen on', value: 'PATH' },
    'read-only': { type: 'boolean', description: 'open the image read-only; writes get EPERM' },
    'export-name': {
      type: 'string',
      description: 'NBD export name (default: empty, the default export)',
      value: 'NAME',
    },
  },
  async run(ctx, input) {
    const image = resolve(argString(input, 'image'));
    const socket = optString(input, 'socket');
    if (!socket) {
      throw new FdError('FD_CLI_BAD_ARGS', 'disk serve needs --socket PATH', {
        hint: 'e.g. flightdeck disk serve disk.vhd --socket /run/vm1/disk0.sock',
      });
    }
    const readOnly = optBool(input, 'read-only');
    const log = createLogger({ json: ctx.json, base: { image } });
    const device = await openDisk(image, { write: !readOnly });
    let signal = '';
    try {
      const server = await startNbdServer({
        socketPath: resolve(socket),
        device,
        readOnly,
        exportName: optString(input, 'export-name') ?? '',
        log,
      });
      const stop = new Promise<string>((done) => {
        const on = (sig: string) => () => done(sig);
        process.once('SIGTERM', on('SIGTERM'));
        process.once('SIGHUP', on('SIGHUP'));
        if (ctx.signal.aborted) done('SIGINT');
        ctx.signal.addEventListener('abort', on('SIGINT'), { once: true });
      });
      const ready: ServeReady = {
        event: 'ready',
        pid: process.pid,
        image,
        socket: server.socketPath,
        url: `nbd+unix:///${server.exportName}?socket=${server.socketPath}`,
        exportName: server.exportName,
        sizeBytes: device.sizeBytes,
        readOnly: server.readOnly,
      };
      process.stdout.write(
        ctx.json ? JSON.stringify(ready) + '\n' : `serving ${image} on ${server.socketPath} (${ready.url})\n`,
      );
      signal = await stop;
      log.info('stopping', { signal });
      await server.close();
    } finally {
      await device.close();
    }
    return { event: 'stopped', signal, socket: resolve(socket) };
  },
  render: () => '',
});

/** argv that runs this CLI again (for the detached vdisk process a mount needs). */
function cliCommand(): string[] {
  return [process.execPath, fileURLToPath(new URL('../main.js', import.meta.url))];
}

const mount = defineCommand<MountState>({
  noun: 'disk',
  verb: 'mount',
  summary: 'mount the filesystem inside a disk image at DIR (vdisk NBD -> FUSE -> loop -> mount)',
  args: [
    { name: 'image', description: 'VHD or raw image', required: true },
    { name: 'dir', description: 'existing directory to mount on', required: true },
  ],
  options: {
    partition: {
      type: 'string',
      description: 'partition number (default: whole disk, or its only partition)',
      value: 'N',
    },
    'read-only': { type: 'boolean', description: 'mount read-only; the image is not opened for writing' },
  },
  async run(_ctx, input) {
    const p = optString(input, 'partition');
    const partition = p === undefined ? undefined : Number(p);
    if (partition !== undefined && (!Number.isInteger(partition) || partition < 1)) {
      throw new FdError('FD_CLI_BAD_ARGS', `--partition must be a number from 1 up, not "${p}"`);
    }
    return mountImage({
      image: argString(input, 'image'),
      dir: argString(input, 'dir'),
      readOnly: optBool(input, 'read-only'),
      cliCommand: cliCommand(),
      ...(partition === undefined ? {} : { partition }),
    });
  },
  render: (s) => `mounted ${s.image} at ${s.dir} (${s.device}${s.readOnly ? ', read-only' : ''})`,
});

const unmount = defineCommand<MountState>({
  noun: 'disk',
  verb: 'unmount',
  summary: 'unmount DIR, flush every write to the image and stop the processes behind it',
  args: [{ name: 'dir', description: 'directory given to disk mount', required: true }],
  async run(_ctx, input) {
    return unmountImage(argString(input, 'dir'));
  },
  render: (s) => `unmounted ${s.dir}; ${s.image} is flushed and closed`,
});

export const diskServeCommands: CommandDef[] = [serve, mount, unmount] as CommandDef[];
