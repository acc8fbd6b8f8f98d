/** Who QEMU runs as: each VM its own users (the default as root), or one user it drops to. */
import { spawnSync } from 'node:child_process';
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { detectCgroups } from '../confine/cgroups.js';
import { DEFAULT_VM_USERS } from '../confine/vm-users.js';
import type { Confinement } from './start.js';
import type { VmRunnerOptions } from './types.js';

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

/** Per-VM users and cgroups: as root, unless a QEMU user was named or confinement is off. */
export function resolveConfinement(opts: VmRunnerOptions): Confinement | null {
  const want = opts.qemuUser ?? 'auto';
  if (opts.confine === false || want !== 'auto' || process.getuid?.() !== 0) return null;
  const cfg = opts.confine ?? {};
  return { users: cfg.users ?? DEFAULT_VM_USERS, cgroups: cfg.cgroups ?? detectCgroups() };
}
