/**
 * Image fleecing: a running VM's disk as it was at one instant, exported read-only over NBD on
 * a unix socket, while the guest goes on writing. A qcow2 node backed by the guest's disk node
 * takes, through a `blockdev-backup sync=none` job (copy-before-write), the old content of
 * every cluster the guest overwrites; reading that node gives the point-in-time view. The
 * guest's disk is never written by us and the guest is never paused: starting the job is one
 * QMP transaction. The only place that knows these QMP commands (until src/qemu/control lands).
 * Everything is named `fd-fleece-<id>` so `stopFleece` can remove what a killed scan left.
 */
import { chown, mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../core/errors.js';
import { run } from '../core/process.js';
import type { QmpClient } from './qmp.js';

export interface Fleece {
  id: string;
  /** NBD unix socket and export name of the point-in-time view. */
  socket: string;
  exportName: string;
}

const node = (id: string): string => `fd-fleece-${id}`;
const paths = (dir: string, id: string) => ({
  dir: join(dir, `fleece-${id}`),
  file: join(dir, `fleece-${id}`, 'overlay.qcow2'),
  socket: join(dir, `fleece-${id}`, 'nbd.sock'),
});

interface NamedNode {
  'node-name': string;
  image: { 'virtual-size': number };
}

/**
 * Starts a fleece of `diskNode` with its files in `dir` (the VM's run dir: QEMU may open files
 * there). The overlay file is given to the user QEMU runs as (`qemuPid`'s), since QEMU has
 * dropped root by now.
 */
export async function startFleece(
  qmp: QmpClient,
  o: { diskNode: string; dir: string; id: string; qemuPid: number },
): Promise<Fleece> {
  if (!/^[a-z0-9-]{1,32}$/.test(o.id)) throw new Error(`bad fleece id ${o.id}`);
  const n = node(o.id);
  const p = paths(o.dir, o.id);
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  const disk = nodes.find((x) => x['node-name'] === o.diskNode);
  if (!disk) throw new FdError('FD_SCAN_NO_DISK', `the VM has no disk node ${o.diskNode}`);
  // a dir of QEMU's own for the overlay and the socket it binds
  const status = await readFile(`/proc/${o.qemuPid}/status`, 'utf8');
  const uid = Number(/^Uid:\s+\d+\s+(\d+)/m.exec(status)?.[1] ?? 0);
  const gid = Number(/^Gid:\s+\d+\s+(\d+)/m.exec(status)?.[1] ?? 0);
  await mkdir(p.dir, { mode: 0o700 });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', p.file, String(disk.image['virtual-size'])]);
  await chown(p.file, uid, gid);
  await chown(p.dir, uid, gid);
  try {
    await qmp.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': n,
      file: { driver: 'file', filename: p.file },
      backing: o.diskNode,
    });
    await qmp.execute('transaction', {
      actions: [{ type: 'blockdev-backup', data: { device: o.diskNode, target: n, sync: 'none', 'job-id': n } }],
    });
    try {
      await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: p.socket } } });
    } catch (err) {
      if (!(err instanceof FdError) || !/already/i.test(err.message)) throw err;
      throw new FdError('FD_SCAN_BUSY', 'the VM already serves NBD (a migration or mirror is in progress)', {
        hint: 'scan again when the migration is over',
        cause: err,
      });
    }
    await qmp.execute('block-export-add', { type: 'nbd', id: n, 'node-name': n, name: n, writable: false });
    return { id: o.id, socket: p.socket, exportName: n };
  } catch (err) {
    await stopFleece(qmp, { dir: o.dir, id: o.id }).catch(() => undefined);
    throw err;
  }
}

/** Removes the export, NBD server, job, node and file of a fleece; what is not there is skipped. */
export async function stopFleece(qmp: QmpClient, o: { dir: string; id: string }): Promise<void> {
  const n = node(o.id);
  const p = paths(o.dir, o.id);
  const exports = await qmp.execute<Array<{ id: string }>>('query-block-exports');
  if (exports.some((e) => e.id === n)) {
    await qmp.execute('block-export-del', { id: n, mode: 'hard' });
    // the export goes once its clients are gone (hard mode disconnects them)
    for (
      let i = 0;
      i < 100 && (await qmp.execute<Array<{ id: string }>>('query-block-exports')).some((e) => e.id === n);
      i++
    )
      await new Promise((r) => setTimeout(r, 50));
  }
  // stop the NBD server only if it is ours: QEMU made our socket when it started it
  if (await stat(p.socket).catch(() => null)) await qmp.execute('nbd-server-stop').catch(() => undefined);
  const jobs = await qmp.execute<Array<{ device: string }>>('query-block-jobs');
  if (jobs.some((j) => j.device === n)) {
    const gone = qmp.waitEvent('BLOCK_JOB_CANCELLED', { timeoutMs: 30_000, pred: (e) => e.data?.['device'] === n });
    await qmp.execute('block-job-cancel', { device: n, force: true });
    await gone;
  }
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  if (nodes.some((x) => x['node-name'] === n)) await qmp.execute('blockdev-del', { 'node-name': n });
  await rm(p.dir, { recursive: true, force: true });
}

/** Ids of fleeces a QEMU still holds (a scan killed midway): for cleanup at start. */
export async function listFleeces(qmp: QmpClient): Promise<string[]> {
  const nodes = await qmp.execute<NamedNode[]>('query-named-block-nodes', { flat: true });
  return nodes.flatMap((x) => (x['node-name'].startsWith('fd-fleece-') ? [x['node-name'].slice(10)] : []));
}
