/**
 * The files a host's daemon and its fence keeper share (under DATA/fence/): the keeper's
 * config, the list of VMs it must fence, and its state. Files, not a socket, so that either
 * side can restart without the other noticing, and a fence never waits on the daemon.
 */
import { join } from 'node:path';
import { readJsonFile, writeJsonFile } from '../../../core/atomic-file.js';

export interface KeeperConfig {
  endpoints: string[];
  hostName: string;
  dataDir: string;
  /** Lease TTL: etcd drops `alive/NAME` this long after the last renewal it received. */
  ttlS: number;
  /** Fence once no renewal sent in this long succeeded; below the TTL, see keeper-main.ts. */
  fenceAfterMs: number;
}

export interface KeeperState {
  pid: number;
  /** True while the keeper holds a lease it renewed less than fenceAfterMs ago. */
  leaseOk: boolean;
  /** Wall-clock time of the last successful renewal (its send time). */
  lastOkAt: string | null;
  since: string;
  /** Last self-fence: when, and the VMs whose QEMU it killed. */
  fencedAt: string | null;
  fenced: string[];
}

export const fenceDir = (dataDir: string): string => join(dataDir, 'fence');
export const keeperConfigPath = (dataDir: string): string => join(fenceDir(dataDir), 'keeper.json');
export const keeperStatePath = (dataDir: string): string => join(fenceDir(dataDir), 'state.json');
export const keeperLogPath = (dataDir: string): string => join(fenceDir(dataDir), 'keeper.log');
export const keeperPidPath = (dataDir: string): string => join(fenceDir(dataDir), 'keeper.pid');
/** VM ids whose QEMU the keeper kills when the host loses its lease (HA and protected VMs). */
export const guardedPath = (dataDir: string): string => join(fenceDir(dataDir), 'guarded.json');

export async function readGuarded(dataDir: string): Promise<string[]> {
  return (await readJsonFile<{ ids: string[] }>(guardedPath(dataDir)))?.ids ?? [];
}

export const writeGuarded = (dataDir: string, ids: string[]): Promise<void> =>
  writeJsonFile(guardedPath(dataDir), { ids: [...new Set(ids)].sort() });
