/** The unprivileged user QEMU drops to, when it exists and can reach the run dir. */
import { spawnSync } from 'node:child_process';
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';

export interface RunAs {
  user: string;
  uid: number;
  gid: number;
}

/**
 * 'auto' (or undefined): `nobody` when we are root and that user can reach the run dir, else
 * null (QEMU stays as our user); a name: that user, which must exist; null: never switch.
 */
export function resolveRunAs(want: string | null | undefined, runDir: string, log: Logger): RunAs | null {
  const w = want === undefined ? 'auto' : want;
  if (w === null || (w === 'auto' && process.getuid?.() !== 0)) return null;
  const user = w === 'auto' ? 'nobody' : w;
  const ids = spawnSync('id', ['-u', user], { encoding: 'utf8' });
  const gids = spawnSync('id', ['-g', user], { encoding: 'utf8' });
  if (ids.status !== 0 || gids.status !== 0) {
    if (w !== 'auto') throw new FdError('FD_VM_USER_NOT_FOUND', `user ${user} does not exist`);
    return null;
  }
  const uid = Number(ids.stdout.trim());
  const gid = Number(gids.stdout.trim());
  // the run dir must be searchable by that user, or NBD reconnects would fail after the drop
  const probe = spawnSync('test', ['-x', runDir], { uid, gid });
  if (probe.status !== 0) {
    log.warn('QEMU stays as our user: the run dir is not reachable by the unprivileged user', { user, runDir });
    return null;
  }
  return { user, uid, gid };
}
