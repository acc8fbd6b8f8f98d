/**
 * Live migration of a running VM between hosts, without shared storage. The source host runs
 * the task; the target host is driven through its API:
 *   1. target `prepare`: new VHDs in its pool (a differencing child over the same base image
 *      when it has it, so only the top layer travels), its vdisk, and QEMU waiting for the
 *      migration (-incoming defer -S) with an NBD server exporting the new disks;
 *   2. source: blockdev-mirror of every disk into the target's exports until in sync;
 *   3. source: migrate memory; at the end the source is paused with disks in sync;
 *   4. target `finish`: stop exporting, `cont`; the guest runs on the target;
 *   5. ownership moves in etcd, then the source's QEMU, vdisk and disk files go.
 * Any failure before 4 cancels everything and leaves the VM running on the source: there is
 * exactly one running copy at every instant. Between 3 and 4 the guest is paused on both
 * sides, so the end of the memory transfer is awaited on QEMU's MIGRATION event, not polled,
 * and the source's idle mirror jobs are released only after the target runs.
 *
 * A cut link stalls QEMU's migration and the mirrors without an error: a watchdog gives up
 * when neither disks nor memory advance for `stallTimeoutMs`, and the NBD connections that
 * would keep the mirror jobs (and the guest's disk writes, in write-blocking mode) waiting for
 * the kernel's TCP timeout (many minutes) are torn down with `ss -K`.
 */
import { FdError, isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { run, sleep } from '../../core/process.js';
import type { QmpClient, QmpEvent } from '../../qemu/qmp.js';
import { qemuIds } from '../../qemu/argv.js';
import type { TaskHandle } from '../state/tasks.js';

export interface MigrationTunables {
  /** Bytes per second for memory; 0 = unlimited. */
  bandwidthBytesPerS: number;
  downtimeLimitMs: number;
  autoConverge: boolean;
  xbzrle: boolean;
  multifd: boolean;
  postcopy: boolean;
  /** Give up when neither disk nor memory bytes advance for this long (a cut link stalls silently). */
  stallTimeoutMs: number;
}

export const DEFAULT_TUNABLES: MigrationTunables = {
  bandwidthBytesPerS: 0,
  downtimeLimitMs: 300,
  autoConverge: true,
  xbzrle: false,
  multifd: false,
  postcopy: false,
  // Long enough that a loaded machine (QEMU starved for seconds) is not taken for a cut link.
  stallTimeoutMs: 30_000,
};

export interface PreparedTarget {
  /** Where the target's QEMU serves the new disks over NBD. */
  nbd: { host: string; port: number };
  /** Per disk id: export name and whether only the top layer needs copying. */
  disks: { id: string; exportName: string; sync: 'top' | 'full' }[];
  migrateUri: string;
}

export interface MigrationResult {
  from: string;
  to: string;
  totalTimeMs: number;
  /** QEMU's own measure of the pause. */
  downtimeMs: number;
  ramBytes: number;
  diskBytes: number;
  setupTimeMs: number;
}

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    'dirty-pages-rate': number;
    'page-size': number;
    mbps: number;
  };
}

interface BlockJob {
  device: string;
  offset: number;
  len: number;
  ready: boolean;
  status: string;
}

export const mirrorNode = (diskId: string): string => `mig-${diskId}`;

/** Fails the migration when the byte count it is fed stops growing for `limitMs`. */
export class StallWatch {
  private last = -1;
  private since = Date.now();

  constructor(
    private readonly limitMs: number,
    private readonly target: string,
  ) {}

  /**
   * A QMP answer that took long means QEMU held its main lock meanwhile (the final flush of the
   * disks, on a busy machine, takes seconds): busy, not stalled. A QEMU that never answers
   * fails the command (FD_QMP_TIMEOUT) instead.
   */
  answered(askedAt: number): void {
    if (Date.now() - askedAt > SLOW_ANSWER_MS) this.since = Date.now();
  }

  check(bytes: number, what: string): void {
    if (bytes > this.last) {
      this.last = bytes;
      this.since = Date.now();
      return;
    }
    if (this.limitMs > 0 && Date.now() - this.since > this.limitMs) {
      throw new FdError(
        'FD_MIGRATION_STALLED',
        `no ${what} moved to ${this.target} for ${Math.round(this.limitMs / 1000)} s; giving up`,
        {
          hint: 'the link between the hosts may be down; the VM keeps running on its host. Check the network and try again',
        },
      );
    }
  }
}

const FINAL_STATES = ['completed', 'failed', 'cancelled'];
const SLOW_ANSWER_MS = 2000;
/** Errors after which the link to the target is suspect: its NBD connections go first. */
const LINK_SUSPECT = ['FD_MIGRATION_STALLED', 'FD_QMP_TIMEOUT'] as const;

/** Source side of the memory + disk transfer; resolves when the source is paused and in sync. */
export async function migrateFromSource(o: {
  qmp: QmpClient;
  target: PreparedTarget;
  tunables: MigrationTunables;
  task: TaskHandle;
  log: Logger;
}): Promise<Omit<MigrationResult, 'from' | 'to' | 'totalTimeMs'>> {
  const { qmp, target, task } = o;
  const started: string[] = [];
  let migrating = false;
  const stall = new StallWatch(o.tunables.stallTimeoutMs, target.nbd.host);
  // Set before `migrate`, so the end of the transfer cannot be missed between two polls.
  let wake: (() => void) | undefined;
  let lastEvent: string | undefined;
  const onMigration = (ev: QmpEvent): void => {
    lastEvent = String(ev.data['status']);
    if (FINAL_STATES.includes(lastEvent)) wake?.();
  };
  qmp.on('MIGRATION', onMigration);
  try {
    // 1. Disks: mirror each into the target's export until in sync.
    for (const d of target.disks) {
      await qmp.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': mirrorNode(d.id),
        server: { type: 'inet', host: target.nbd.host, port: String(target.nbd.port) },
        export: d.exportName,
      });
      await qmp.execute('blockdev-mirror', {
        'job-id': mirrorNode(d.id),
        device: qemuIds.diskNode(d.id),
        target: mirrorNode(d.id),
        sync: d.sync,
        // Guest writes go to both sides synchronously once the bulk copy is done, so the
        // mirror cannot fall behind a guest that writes fast.
        'copy-mode': 'write-blocking',
        'auto-finalize': true,
      });
      started.push(d.id);
    }
    let diskBytes = 0;
    if (started.length) task.log(`mirroring ${started.length} disk(s) to the target`);
    for (;;) {
      if (task.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'migration cancelled');
      const asked = Date.now();
      const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
      stall.answered(asked);
      const mine = jobs.filter((j) => started.some((id) => j.device === mirrorNode(id)));
      if (mine.length < started.length)
        throw new FdError('FD_MIGRATION_FAILED', 'a disk mirror job ended early (the target went away?)');
      const done = mine.reduce((a, j) => a + j.offset, 0);
      const total = mine.reduce((a, j) => a + j.len, 0);
      diskBytes = done;
      task.progress({ done, total: Math.max(total, 1), unit: 'bytes', ratePerS: 0, etaS: null, message: 'disks' });
      if (mine.every((j) => j.ready)) break;
      stall.check(done, 'disk data');
      await sleep(100);
    }

    // 2. Memory.
    const caps = [
      { capability: 'auto-converge', state: o.tunables.autoConverge },
      { capability: 'xbzrle', state: o.tunables.xbzrle },
      { capability: 'multifd', state: o.tunables.multifd },
      { capability: 'postcopy-ram', state: o.tunables.postcopy },
      { capability: 'events', state: true },
    ];
    await qmp.execute('migrate-set-capabilities', { capabilities: caps });
    await qmp.execute('migrate-set-parameters', {
      'downtime-limit': o.tunables.downtimeLimitMs,
      // QEMU's default cap is 128 MiB/s; "unlimited" is a very large number.
      'max-bandwidth': o.tunables.bandwidthBytesPerS > 0 ? o.tunables.bandwidthBytesPerS : 100 * 1024 ** 3,
    });
    task.log('moving memory');
    await qmp.execute('migrate', { uri: o.target.migrateUri });
    migrating = true;
    let startedPostcopy = false;
    for (;;) {
      if (task.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'migration cancelled');
      const asked = Date.now();
      const q = await qmp.execute<QueryMigrate>('query-migrate');
      stall.answered(asked);
      if (q.status === 'completed') {
        migrating = false;
        // The guest is paused on both sides from here: first make sure every disk is on the
        // target, then hand over at once; progress and statistics can wait.
        await settleMirrors(qmp, started, o.log);
        return {
          downtimeMs: q.downtime ?? 0,
          ramBytes: q.ram?.transferred ?? 0,
          diskBytes,
          setupTimeMs: q['setup-time'] ?? 0,
        };
      }
      if (q.ram) {
        task.progress({
          done: q.ram.transferred,
          total: Math.max(q.ram.transferred + q.ram.remaining, 1),
          unit: 'bytes',
          ratePerS: (q.ram.mbps * 1e6) / 8,
          etaS: q.ram.mbps > 0 ? (q.ram.remaining * 8) / (q.ram.mbps * 1e6) : null,
          message: `memory, dirty ${q.ram['dirty-pages-rate'] * (q.ram['page-size'] || 4096)} B/s, expected downtime ${q['expected-downtime'] ?? '?'} ms`,
        });
      }
      if (q.status === 'failed' || q.status === 'cancelled') {
        migrating = false;
        throw new FdError(
          'FD_MIGRATION_FAILED',
          `QEMU migration ${q.status}: ${q['error-desc'] ?? 'no reason given'}`,
          {
            hint: 'the VM keeps running on its host; check the link between the hosts and try again',
          },
        );
      }
      if (
        o.tunables.postcopy &&
        !startedPostcopy &&
        q.status === 'active' &&
        (q.ram?.remaining ?? 0) > 0 &&
        q.ram &&
        q.ram.transferred > q.ram.total
      ) {
        await qmp.execute('migrate-start-postcopy');
        startedPostcopy = true;
      }
      // A cut link shows as no progress, not as an error (also in QEMU's final 'device' step).
      stall.check(q.ram?.transferred ?? 0, 'memory');
      // Progress every 250 ms; the MIGRATION event ends the wait as soon as QEMU is done.
      if (!lastEvent || !FINAL_STATES.includes(lastEvent)) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 250);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    }
  } catch (err) {
    // On a cut link an NBD request of a mirror stays in flight; a QMP command that drains the
    // block layer (the cancel, the cleanup) then blocks QEMU's main loop, its monitor and the
    // guest's vCPUs until the kernel gives up on the connection. Its connections go first.
    if (LINK_SUSPECT.some((c) => isFdError(err, c)) && started.length) await killConnections(target.nbd);
    await rollbackSource(qmp, started, migrating, target.nbd, o.log);
    throw err;
  } finally {
    qmp.off('MIGRATION', onMigration);
  }
}

/**
 * At the end of the memory transfer the mirrors are normally in sync (write-blocking mode).
 * If one still reports data to copy, a cancel without force lets it copy the rest first (no
 * pivot: the source keeps its own disks). The guest is paused meanwhile; this is rare.
 */
async function settleMirrors(qmp: QmpClient, diskIds: string[], log: Logger): Promise<void> {
  if (!diskIds.length) return;
  const jobs = await qmp.execute<BlockJob[]>('query-block-jobs');
  const behind = jobs.filter((j) => diskIds.some((id) => j.device === mirrorNode(id)) && j.offset < j.len);
  if (!behind.length) return;
  log.warn('mirrors behind at the end of the migration; letting them finish', {
    jobs: behind.map((j) => `${j.device} ${j.len - j.offset} bytes`),
  });
  for (const j of behind) await qmp.execute('block-job-cancel', { device: j.device, force: false });
  for (let i = 0; ; i++) {
    const now = await qmp.execute<BlockJob[]>('query-block-jobs');
    if (!now.some((j) => behind.some((b) => b.device === j.device))) return;
    if (i > 1000) throw new FdError('FD_MIGRATION_FAILED', 'the disk mirrors did not finish after the memory moved');
    await sleep(10);
  }
}

/**
 * Stops the source's mirror jobs without pivoting (after success they are idle; after a
 * failure they may wait on a dead link) and removes their NBD nodes. A force-cancel does not
 * interrupt NBD requests in flight, so when the jobs do not end within 2 s and the target's
 * NBD endpoint is known, the connections to it are torn down (the requests then fail and the
 * jobs end); guest writes only ever waited on the target copy, the source copy is written.
 */
export async function releaseSourceMirrors(
  qmp: QmpClient,
  diskIds: string[],
  nbd?: { host: string; port: number },
  log?: Logger,
): Promise<void> {
  for (const id of diskIds) {
    await qmp.execute('block-job-cancel', { device: mirrorNode(id), force: true }).catch(() => undefined);
  }
  const gone = async (tries: number): Promise<boolean> => {
    for (let i = 0; i < tries; i++) {
      const jobs = await qmp.execute<BlockJob[]>('query-block-jobs').catch(() => [] as BlockJob[]);
      if (!jobs.some((j) => diskIds.some((id) => j.device === mirrorNode(id)))) return true;
      await sleep(20);
    }
    return false;
  };
  if (!(await gone(100)) && nbd) {
    log?.warn('mirror jobs stuck on the link to the target; closing their connections', { target: nbd.host });
    await killConnections(nbd);
    await gone(250);
  }
  for (const id of diskIds) await qmp.execute('blockdev-del', { 'node-name': mirrorNode(id) }).catch(() => undefined);
}

/** Destroys this host's TCP connections to host:port (the kernel's sock_destroy, via ss -K). */
async function killConnections(to: { host: string; port: number }): Promise<void> {
  const dst = to.host.includes(':') ? `[${to.host}]` : to.host;
  await run('ss', ['-K', 'dst', dst, 'dport', '=', String(to.port)], { allowFail: true });
}

async function rollbackSource(
  qmp: QmpClient,
  diskIds: string[],
  migrating: boolean,
  nbd: { host: string; port: number },
  log: Logger,
): Promise<void> {
  if (migrating)
    await qmp
      .execute('migrate_cancel')
      .catch((err: unknown) => log.warn('migrate_cancel failed', { err: String(err) }));
  // Wait until QEMU has left the migration state before touching the jobs.
  for (let i = 0; i < 100; i++) {
    const q = await qmp.execute<QueryMigrate>('query-migrate').catch(() => ({}) as QueryMigrate);
    if (!q.status || ['completed', 'failed', 'cancelled', 'none'].includes(q.status)) break;
    await sleep(50);
  }
  await releaseSourceMirrors(qmp, diskIds, nbd, log);
  const st = await qmp.execute<{ status: string }>('query-status').catch(() => undefined);
  if (st && st.status !== 'running') {
    await qmp
      .execute('cont')
      .catch((err: unknown) => log.error('could not resume the source after a failed migration', { err: String(err) }));
  }
}
