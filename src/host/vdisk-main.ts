/**
 * Entry point of a VM's vdisk process: `node vdisk-main.js CONFIG.json`. Serves every VHD disk
 * of one VM, each on its own NBD unix socket, from one process (the XenServer tapdisk idea,
 * one per VM). Prints one JSON ready line when all sockets listen; on SIGTERM it stops accepting,
 * lets in-flight requests finish, flushes and closes every chain, then exits 0.
 * Kept apart from the CLI so a VM's data path loads nothing but the disk layer.
 */
import { readFile } from 'node:fs/promises';
import { createLogger } from '../core/log.js';
import { openDisk } from '../disk/open.js';
import { startNbdServer, type NbdServer, type NbdTlsOptions } from '../disk/nbd/server.js';
import type { BlockDevice } from '../disk/block-device.js';

export interface VdiskConfig {
  exports: Array<{
    image: string;
    socketPath: string;
    exportName: string;
    readOnly: boolean;
    /** Serve on TCP instead of the unix socket (the standby's mirror target, see cluster/protection/). */
    tcp?: { host: string; port: number };
    /**
     * Mutual TLS (NBD_OPT_STARTTLS): PEM files of this host's certificate and key, and of the
     * cluster CA that clients' certificates must chain to. Set it on every TCP export.
     */
    tls?: VdiskTls;
  }>;
}

export interface VdiskTls {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** Refuse clients that do not start TLS (default true). */
  required?: boolean;
}

async function main(configPath: string): Promise<number> {
  const cfg = JSON.parse(await readFile(configPath, 'utf8')) as VdiskConfig;
  const log = createLogger({ json: true, base: { vdisk: process.pid } });
  const devices: BlockDevice[] = [];
  const servers: NbdServer[] = [];
  const stop = new Promise<string>((done) => {
    process.once('SIGTERM', () => done('SIGTERM'));
    process.once('SIGINT', () => done('SIGINT'));
  });
  process.on('SIGHUP', () => undefined); // no terminal owns us; never die of a hangup
  try {
    for (const e of cfg.exports) {
      const device = await openDisk(e.image, { write: !e.readOnly });
      devices.push(device);
      servers.push(
        await startNbdServer({
          socketPath: e.socketPath,
          device,
          exportName: e.exportName,
          readOnly: e.readOnly,
          log,
          ...(e.tcp ? { tcp: e.tcp } : {}),
          ...(e.tls ? { tls: await readTls(e.tls) } : {}),
        }),
      );
    }
    process.stdout.write(
      JSON.stringify({ event: 'ready', pid: process.pid, sockets: servers.map((s) => s.socketPath) }) + '\n',
    );
    const signal = await stop;
    log.info('stopping', { signal });
    for (const s of servers) await s.close();
    return 0;
  } finally {
    for (const d of devices) await d.close();
  }
}

async function readTls(t: VdiskTls): Promise<NbdTlsOptions> {
  const [certPem, keyPem, caPem] = await Promise.all([t.certFile, t.keyFile, t.caFile].map((f) => readFile(f)));
  return { certPem: certPem!, keyPem: keyPem!, caPem: caPem!, required: t.required !== false };
}

main(process.argv[2] ?? '').then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`vdisk failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
