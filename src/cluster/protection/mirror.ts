/**
 * The primary's half of a mirror, in its QEMU: one `blockdev-mirror` per disk, in
 * write-blocking mode, into the standby's vdisk over NBD/TCP. After the initial sync (job
 * `ready`) every guest write completes on both copies before the guest sees it complete.
 */
import type { BlockJob, QemuControl } from '../../qemu/control/index.js';
import { isProtectionNode, qemuIds } from '../../qemu/nodes.js';
import type { StandbyMirror } from '../state/model.js';

/** The VM's protection mirror jobs (one per disk when complete). */
export function mirrorJobs(ctl: QemuControl): Promise<BlockJob[]> {
  return ctl.jobs.matching(isProtectionNode);
}

/** Starts a mirror job per disk into the standby's exports. */
export async function startMirrorJobs(ctl: QemuControl, mirror: StandbyMirror): Promise<void> {
  for (const dk of mirror.disks) {
    const node = qemuIds.protectionNode(dk.id);
    await ctl.nbd.clientAdd({ node, server: { host: mirror.host, port: dk.port }, exportName: dk.exportName });
    await ctl.jobs.mirror({
      jobId: node,
      source: qemuIds.diskNode(dk.id),
      target: node,
      sync: dk.sync,
      // Every guest write reaches both copies before it completes, once the bulk copy is done.
      copyMode: 'write-blocking',
    });
  }
}

/**
 * Ends the mirror jobs (graceful: a job first copies what it still has to, so the standby is
 * in sync when it ends) and removes their NBD nodes.
 */
export async function stopMirrorJobs(ctl: QemuControl, diskIds: string[], opts: { graceful: boolean }): Promise<void> {
  const jobs = (await mirrorJobs(ctl)).map((j) => j.device);
  await ctl.jobs.cancelAll(jobs, { force: !opts.graceful });
  await ctl.jobs.waitGone(jobs, 4000);
  for (const id of diskIds) await ctl.nbd.nodeRemove(qemuIds.protectionNode(id)).catch(() => undefined);
}

/**
 * A lost standby may hang the mirror's writes (a cut link never errors): yanking the
 * connections fails what is in flight, so the jobs end and the guest's writes go on.
 */
export async function yankMirrors(ctl: QemuControl, diskIds: string[]): Promise<void> {
  for (const id of diskIds) await ctl.nbd.yank(qemuIds.protectionNode(id)).catch(() => undefined);
}
