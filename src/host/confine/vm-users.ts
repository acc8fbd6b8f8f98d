/**
 * Each running VM gets its own users from a reserved range, as libvirt gives each domain its own
 * label: QEMU runs as one uid, the VM's vdisk process as another, so a guest that escapes into
 * its QEMU can reach only its own run dir and its own disk socket, and cannot signal or trace its
 * vdisk. The ids need no /etc/passwd entry. Slots are claimed host-wide (several daemons share a
 * machine) by creating a file in a registry under /run exclusively; the claim names its owner,
 * and a claim whose owner's VM no longer runs is taken over.
 *
 *   first             the shared group: lets QEMU and vdisk processes traverse the data dir
 *   first + 1 + 2k    slot k: QEMU's uid, and the VM's group (its run dir is root:this 0710)
 *   first + 2 + 2k    slot k: the vdisk's uid (primary group: the VM's group)
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError, isErrno } from '../../core/errors.js';

export interface VmUserRange {
  /** The shared group id; slots follow it. */
  first: number;
  /** Number of slots (VMs running at once on this host). */
  count: number;
  /** Where claims live (host-wide; default /run/flightdeck/vm-users). */
  registryDir?: string;
}

export const DEFAULT_VM_USERS: VmUserRange = { first: 200_000_000, count: 10_000 };
export const DEFAULT_REGISTRY = '/run/flightdeck/vm-users';

export interface VmUsers {
  slot: number;
  /** QEMU's uid; also the VM's group id. */
  qemuUid: number;
  vdiskUid: number;
  /** The shared traversal group. */
  sharedGid: number;
  /** The claim file (given back with releaseVmUsers). */
  claim: string;
}

export function usersOfSlot(range: VmUserRange, slot: number): VmUsers {
  return {
    slot,
    claim: claimPath(range, slot),
    qemuUid: range.first + 1 + 2 * slot,
    vdiskUid: range.first + 2 + 2 * slot,
    sharedGid: range.first,
  };
}

interface Claim {
  runDir: string;
  name: string;
  at: string;
}

/** A claim this young is never stale: its VM may be between the claim and its first record. */
const CLAIM_GRACE_MS = 120_000;

const registry = (range: VmUserRange): string => range.registryDir ?? DEFAULT_REGISTRY;
const claimPath = (range: VmUserRange, slot: number): string => join(registry(range), `${slot}.json`);

/**
 * Claims a slot for VM `name` of the runner at `runDir`. `inUse(claim)` says whether another
 * claim's VM still runs (the caller reads that VM's record); stale claims are taken over.
 */
export async function claimVmUsers(
  range: VmUserRange,
  runDir: string,
  name: string,
  inUse: (runDir: string, name: string, slot: number) => Promise<boolean>,
): Promise<VmUsers> {
  await mkdir(registry(range), { recursive: true, mode: 0o700 });
  // Start at a slot derived from the VM, so a VM usually gets the same uid again.
  const start = createHash('sha256').update(`${runDir}/${name}`).digest().readUInt32BE(0) % range.count;
  const claim: Claim = { runDir, name, at: new Date().toISOString() };
  for (let i = 0; i < range.count; i++) {
    const slot = (start + i) % range.count;
    const path = claimPath(range, slot);
    // Twice at most: once more after removing a stale claim (another claimer may win it: fine).
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await open(path, 'wx', 0o600);
        await fh.writeFile(JSON.stringify(claim));
        await fh.close();
        return usersOfSlot(range, slot);
      } catch (err) {
        if (!isErrno(err, 'EEXIST')) throw err;
      }
      const held = await readClaim(path);
      if (held && held.runDir === runDir && held.name === name) return usersOfSlot(range, slot);
      // A claim being written reads as nothing yet: young by its file's time.
      const at = held ? Date.parse(held.at) : ((await stat(path).catch(() => undefined))?.mtimeMs ?? 0);
      if (Date.now() - at < CLAIM_GRACE_MS) break;
      if (held && (await inUse(held.runDir, held.name, slot))) break;
      await unlink(path).catch(() => undefined); // stale: its VM is gone
    }
  }
  throw new FdError('FD_VM_USERS_EXHAUSTED', `all ${range.count} VM user slots of this host are in use`, {
    hint: 'raise vmUsers.count in DATA_DIR/config.json',
  });
}

async function readClaim(path: string): Promise<Claim | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Claim;
  } catch (err) {
    if (isErrno(err, 'ENOENT') || err instanceof SyntaxError) return undefined;
    throw err;
  }
}

/** Gives a slot back (the VM stopped); only the claim of this VM is removed. */
export async function releaseVmUsers(claim: string, runDir: string, name: string): Promise<void> {
  const held = await readClaim(claim);
  if (held && held.runDir === runDir && held.name === name) await unlink(claim).catch(() => undefined);
}
