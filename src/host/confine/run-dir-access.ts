/**
 * The way from the root to a VM's run dir, for the VM's own users: the run dir (and, when the
 * daemon's data dir holds it, the data dir) belong to root and the shared group, mode 0710, so
 * QEMU and vdisk processes pass through and nobody else gets in. Checked as such a user, since
 * a QEMU that cannot reach its sockets fails in ways that say little.
 */
import { spawnSync } from 'node:child_process';
import { chmod, chown } from 'node:fs/promises';
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { usersOfSlot, type VmUserRange } from './vm-users.js';

export const VM_TRAVERSE_MODE = 0o710;

export async function openRunDirToVms(runDir: string, range: VmUserRange, log: Logger): Promise<void> {
  await chown(runDir, 0, range.first);
  await chmod(runDir, VM_TRAVERSE_MODE);
  const probe = usersOfSlot(range, 0);
  const r = spawnSync('setpriv', [
    `--reuid=${probe.qemuUid}`,
    `--regid=${probe.qemuUid}`,
    `--groups=${probe.sharedGid}`,
    '--',
    'test',
    '-x',
    runDir,
  ]);
  if (r.status !== 0) {
    log.error("the VMs' users cannot reach the run dir", { runDir });
    throw new FdError('FD_RUN_DIR_UNREACHABLE', `QEMU running as a VM's own user cannot reach ${runDir}`, {
      hint: `give every directory above it the search bit for group ${range.first} (the daemon does this for its data dir)`,
    });
  }
}
