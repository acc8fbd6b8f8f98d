/**
 * NBD in QEMU, both ways: QEMU's own NBD server exporting block nodes (a migration target
 * receiving disks), and NBD client nodes added at run time (a mirror's target on another host),
 * removed again, and yanked when their connection hangs on a dead link.
 */
import type { QmpChannel } from '../qmp.js';

export interface TcpAddress {
  host: string;
  port: number;
}

export interface BlockExport {
  id: string;
  'node-name': string;
  type: string;
}

export class Nbd {
  constructor(private readonly q: QmpChannel) {}

  async serverStart(addr: TcpAddress): Promise<void> {
    await this.q.execute('nbd-server-start', {
      addr: { type: 'inet', data: { host: addr.host, port: String(addr.port) } },
    });
  }

  /** Stops the server; a server that is not running is no error. */
  async serverStop(): Promise<void> {
    await this.q.execute('nbd-server-stop').catch((err: unknown) => {
      if (!/not running|no NBD server/i.test(String(err))) throw err;
    });
  }

  /** Exports `node` under `name` (the export id is the name too). */
  async exportAdd(o: { name: string; node: string; writable: boolean }): Promise<void> {
    await this.q.execute('block-export-add', {
      type: 'nbd',
      id: o.name,
      'node-name': o.node,
      name: o.name,
      writable: o.writable,
    });
  }

  async exports(): Promise<BlockExport[]> {
    return this.q.execute<BlockExport[]>('query-block-exports');
  }

  /** Removes every export at once, dropping clients still connected (hard). */
  async exportsRemoveAll(): Promise<void> {
    for (const e of await this.exports()) await this.q.execute('block-export-del', { id: e.id, mode: 'hard' });
  }

  /** Adds a block node that reads and writes an export of another host's NBD server. */
  async clientAdd(o: { node: string; server: TcpAddress; exportName: string }): Promise<void> {
    await this.q.execute('blockdev-add', {
      driver: 'nbd',
      'node-name': o.node,
      server: { type: 'inet', host: o.server.host, port: String(o.server.port) },
      export: o.exportName,
    });
  }

  /** Removes a block node nothing uses any more; one that is already gone is no error. */
  async nodeRemove(node: string): Promise<void> {
    await this.q.execute('blockdev-del', { 'node-name': node }).catch((err: unknown) => {
      if (!/cannot find|not found/i.test(String(err))) throw err;
    });
  }

  /**
   * Fails whatever the node's NBD connection has in flight and drops the connection: a request
   * on a cut link would otherwise block until the kernel's TCP timeout, many minutes.
   */
  async yank(node: string): Promise<void> {
    await this.q.execute('yank', { instances: [{ type: 'block-node', 'node-name': node }] });
  }
}
