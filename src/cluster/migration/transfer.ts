/**
 * The source side of moving a running VM's disks and memory into a target QEMU, through the
 * typed QEMU control layer:
 *   1. disks: a `blockdev-mirror` of every disk into the target's NBD exports, in write-blocking
 *      mode, until all are in sync;
 *   2. memory: QEMU's migration; at its end the source is paused with its disks in sync.
 * Any failure rolls the source back (mirrors released, migration cancelled, guest resumed):
 * the target never ran the guest. The memory phase alone is also what a planned failover uses
 * (its disks are on the standby already).
 *
 * A cut link stalls QEMU's migration and the mirrors without an error: a watchdog gives up
 * when neither disks nor memory advance for `stallTimeoutMs`, and the NBD connections that
 * would keep the mirror jobs (and the guest's disk writes, in write-blocking mode) waiting for
 * the kernel's TCP timeout (many minutes) are torn down with `ss -K`.
 */
import { FdError, isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { run, sleep } from '../../core/process.js';
import type { MigrationInfo, QemuControl, TcpAddress } from '../../qemu/control/index.js';
import { isFinal } from '../../qemu/control/index.js';
import { qemuIds } from '../../qemu/nodes.js';
import type { TaskHandle } from '../state/tasks.js';
import type { MigrationResult, MigrationTunables, PreparedTarget } from './plan.js';

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

const SLOW_ANSWER_MS = 2000;
/** Progress of the memory phase is shown this often; its end wakes the loop at once. */
const PROGRESS_EVERY_MS = 250;
/** Errors after which the link to the target is suspect: its NBD connections go first. */
const LINK_SUSPECT = ['FD_MIGRATION_STALLED', 'FD_QMP_TIMEOUT'] as const;

export type MovedState = Omit<MigrationResult, 'from' | 'to' | 'totalTimeMs'>;

/** Source side of the memory + disk transfer; resolves when the source is paused and in sync. */
export async function migrateFromSource(o: {
  ctl: QemuControl;
  target: PreparedTarget;
  tunables: MigrationTunables;
  task: TaskHandle;
  log: Logger;
}): Promise<MovedState> {
  const { ctl, target, task } = o;
  const started: string[] = [];
  const stall = new StallWatch(o.tunables.stallTimeoutMs, target.nbd.host);
  let memoryStarted = false;
  try {
    // 1. Disks: mirror each into the target's export until in sync.
    for (const d of target.disks) {
      const node = qemuIds.migrationNode(d.id);
      await ctl.nbd.clientAdd({ node, server: target.nbd, exportName: d.exportName });
      await ctl.jobs.mirror({
        jobId: node,
        source: qemuIds.diskNode(d.id),
        target: node,
        sync: d.sync,
        // Guest writes go to both sides synchronously once the bulk copy is done, so the
        // mirror cannot fall behind a guest that writes fast.
        copyMode: 'write-blocking',
      });
      started.push(d.id);
    }
    const diskBytes = await waitDisksInSync(ctl, started, stall, task);

    // 2. Memory.
    memoryStarted = true;
    const mem = await moveMemory({ ctl, uri: target.migrateUri, tunables: o.tunables, task, stall });
    // The guest is paused on both sides from here: first make sure every disk is on the
    // target, then hand over at once; progress and statistics can wait.
    await settleMirrors(ctl, started, o.log);
    return { ...mem, diskBytes };
  } catch (err) {
    // On a cut link an NBD request of a mirror stays in flight; a QMP command that drains the
    // block layer (the cancel, the cleanup) then blocks QEMU's main loop, its monitor and the
    // guest's vCPUs until the kernel gives up on the connection. Its connections go first.
    if (LINK_SUSPECT.some((c) => isFdError(err, c)) && started.length) await killConnections(target.nbd);
    await rollbackSource(ctl, started, memoryStarted, target.nbd, o.log);
    throw err;
  }
}

/** Mirrors every disk until all are ready; returns the bytes copied. */
async function waitDisksInSync(
  ctl: QemuControl,
  diskIds: string[],
  stall: StallWatch,
  task: TaskHandle,
): Promise<number> {
  if (diskIds.length) task.log(`mirroring ${diskIds.length} disk(s) to the target`);
  const ids = new Set(diskIds.map(qemuIds.migrationNode));
  for (;;) {
    if (task.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'migration cancelled');
    const asked = Date.now();
    const mine = await ctl.jobs.matching((id) => ids.has(id));
    stall.answered(asked);
    if (mine.length < ids.size)
      throw new FdError('FD_MIGRATION_FAILED', 'a disk mirror job ended early (the target went away?)');
    const done = mine.reduce((a, j) => a + j.offset, 0);
    const total = mine.reduce((a, j) => a + j.len, 0);
    task.progress({ done, total: Math.max(total, 1), unit: 'bytes', ratePerS: 0, etaS: null, message: 'disks' });
    if (mine.every((j) => j.ready)) return done;
    stall.check(done, 'disk data');
    await sleep(100);
  }
}

/**
 * The memory phase: capabilities, parameters, `migrate`, progress until QEMU reports the end
 * (its MIGRATION event wakes the loop at once). On success the source is paused.
 */
export async function moveMemory(o: {
  ctl: QemuControl;
  uri: string;
  tunables: MigrationTunables;
  task: TaskHandle;
  stall?: StallWatch;
}): Promise<Omit<MovedState, 'diskBytes'>> {
  const { ctl, tunables, task } = o;
  const stall = o.stall ?? new StallWatch(tunables.stallTimeoutMs, o.uri);
  await ctl.migration.setCapabilities({
    autoConverge: tunables.autoConverge,
    xbzrle: tunables.xbzrle,
    multifd: tunables.multifd,
    postcopy: tunables.postcopy,
    events: true,
  });
  await ctl.migration.setParameters({
    downtimeLimitMs: tunables.downtimeLimitMs,
    maxBandwidthBytesPerS: tunables.bandwidthBytesPerS,
  });
  // Set before `migrate`, so the end of the transfer cannot be missed between two reads.
  let wake: (() => void) | undefined;
  let ended = false;
  const off = ctl.migration.onStatus((s) => {
    if (isFinal(s)) {
      ended = true;
      wake?.();
    }
  });
  try {
    task.log('moving memory');
    await ctl.migration.start(o.uri);
    let startedPostcopy = false;
    for (;;) {
      if (task.signal.aborted) throw new FdError('FD_TASK_CANCELLED', 'migration cancelled');
      const asked = Date.now();
      const q = await ctl.migration.query();
      stall.answered(asked);
      if (q.status === 'completed')
        return { downtimeMs: q.downtimeMs ?? 0, ramBytes: q.ram?.transferred ?? 0, setupTimeMs: q.setupTimeMs ?? 0 };
      if (q.status === 'failed' || q.status === 'cancelled') {
        throw new FdError('FD_MIGRATION_FAILED', `QEMU migration ${q.status}: ${q.error ?? 'no reason given'}`, {
          hint: 'the VM keeps running on its host; check the link between the hosts and try again',
        });
      }
      reportMemory(task, q);
      if (tunables.postcopy && !startedPostcopy && q.status === 'active' && q.ram && q.ram.remaining > 0) {
        // More sent than the guest has: pre-copy is not converging.
        if (q.ram.transferred > q.ram.total) {
          await ctl.migration.startPostcopy();
          startedPostcopy = true;
        }
      }
      // A cut link shows as no progress, not as an error (also in QEMU's final 'device' step).
      stall.check(q.ram?.transferred ?? 0, 'memory');
      if (!ended)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, PROGRESS_EVERY_MS);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      wake = undefined;
    }
  } finally {
    off();
  }
}

function reportMemory(task: TaskHandle, q: MigrationInfo): void {
  if (!q.ram) return;
  const ram = q.ram;
  task.progress({
    done: ram.transferred,
    total: Math.max(ram.transferred + ram.remaining, 1),
    unit: 'bytes',
    ratePerS: (ram.mbps * 1e6) / 8,
    etaS: ram.mbps > 0 ? (ram.remaining * 8) / (ram.mbps * 1e6) : null,
    message: `memory, dirty ${ram.dirtyPagesRate * ram.pageSize} B/s, expected downtime ${q.expectedDowntimeMs ?? '?'} ms`,
  });
}

/**
 * At the end of the memory transfer the mirrors are normally in sync (write-blocking mode).
 * If one still reports data to copy, a cancel without force lets it copy the rest first (no
 * pivot: the source keeps its own disks). The guest is paused meanwhile; this is rare.
 */
async function settleMirrors(ctl: QemuControl, diskIds: string[], log: Logger): Promise<void> {
  if (!diskIds.length) return;
  const ids = new Set(diskIds.map(qemuIds.migrationNode));
  const behind = (await ctl.jobs.matching((id) => ids.has(id))).filter((j) => j.offset < j.len);
  if (!behind.length) return;
  log.warn('mirrors behind at the end of the migration; letting them finish', {
    jobs: behind.map((j) => `${j.device} ${j.len - j.offset} bytes`),
  });
  for (const j of behind) await ctl.jobs.cancel(j.device, { force: false });
  if (
    !(await ctl.jobs.waitGone(
      behind.map((j) => j.device),
      20_000,
    ))
  )
    throw new FdError('FD_MIGRATION_FAILED', 'the disk mirrors did not finish after the memory moved');
}

/**
 * Stops the source's mirror jobs without pivoting (after success they are idle; after a
 * failure they may wait on a dead link) and removes their NBD nodes. A force-cancel does not
 * interrupt NBD requests in flight, so when the jobs do not end within 2 s and the target's
 * NBD endpoint is known, the connections to it are torn down (the requests then fail and the
 * jobs end); guest writes only ever waited on the target copy, the source copy is written.
 */
export async function releaseSourceMirrors(
  ctl: QemuControl,
  diskIds: string[],
  nbd?: TcpAddress,
  log?: Logger,
): Promise<void> {
  const jobs = diskIds.map(qemuIds.migrationNode);
  await ctl.jobs.cancelAll(jobs, { force: true });
  if (!(await ctl.jobs.waitGone(jobs, 2000)) && nbd) {
    log?.warn('mirror jobs stuck on the link to the target; closing their connections', { target: nbd.host });
    await killConnections(nbd);
    await ctl.jobs.waitGone(jobs, 5000);
  }
  for (const node of jobs) await ctl.nbd.nodeRemove(node);
}

/** Destroys this host's TCP connections to host:port (the kernel's sock_destroy, via ss -K). */
export async function killConnections(to: TcpAddress): Promise<void> {
  const dst = to.host.includes(':') ? `[${to.host}]` : to.host;
  await run('ss', ['-K', 'dst', dst, 'dport', '=', String(to.port)], { allowFail: true });
}

async function rollbackSource(
  ctl: QemuControl,
  diskIds: string[],
  memoryStarted: boolean,
  nbd: TcpAddress,
  log: Logger,
): Promise<void> {
  if (memoryStarted) {
    await ctl.migration.cancel().catch((err: unknown) => log.warn('migrate_cancel failed', { err: String(err) }));
    // QEMU must have left the migration before the jobs are touched.
    const now = await ctl.migration.query().catch(() => undefined);
    if (now && !isFinal(now.status) && now.status !== 'none') {
      const end = await ctl.migration.waitFinal(5000).catch(() => undefined);
      if (end && !isFinal(end.status)) log.warn('the migration did not end after its cancel', { status: end.status });
    }
  }
  await releaseSourceMirrors(ctl, diskIds, nbd, log).catch((err: unknown) =>
    log.warn('releasing the mirrors of a failed migration', { err: String(err) }),
  );
  await ctl.run
    .resumeIfPaused()
    .catch((err: unknown) => log.error('could not resume the source after a failed migration', { err: String(err) }));
}
