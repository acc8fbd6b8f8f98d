/**
 * A group of VMs imported from one VirtualSystemCollection, kept under `groups/NAME`: which VMs
 * belong to it and in what order (and with what delays) the appliance wants them started.
 * `ovf export GROUP` writes the group back as a collection with the same StartupSection.
 */
import { FdError } from '../core/errors.js';
import type { KvStore } from '../cluster/state/kv.js';
import { keys } from '../cluster/state/keys.js';

export interface GroupMember {
  vmId: string;
  name: string;
  /** The virtual system's ovf:id in the appliance it came from. */
  ovfId: string;
  order: number;
  startDelayS: number;
  stopDelayS: number;
  waitingForGuest: boolean;
}

export interface GroupRecord {
  name: string;
  /** The collection's name in the appliance. */
  collection: string;
  source: string;
  members: GroupMember[];
  createdAt: string;
}

export const groupKey = (name: string): string => keys.group(name);

export async function getGroup(store: KvStore, name: string): Promise<GroupRecord | undefined> {
  return (await store.get<GroupRecord>(groupKey(name)))?.value;
}

export function groupExists(name: string): FdError {
  return new FdError('FD_GROUP_EXISTS', `a VM group named ${name} already exists`, {
    hint: 'import under another --name',
    status: 409,
  });
}
