/** Identifiers: UUIDs for VMs and disks, short ids for tasks, and the name rule for everything. */
import { randomUUID, randomBytes } from 'node:crypto';
import { FdError } from './errors.js';

export const newUuid = (): string => randomUUID();

/** Time-ordered task id: sortable by creation, unique without coordination. */
export function newTaskId(): string {
  return `${Date.now().toString(36).padStart(9, '0')}-${randomBytes(4).toString('hex')}`;
}

export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/;

export function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name)) {
    throw new FdError('FD_BAD_NAME', `${kind} name "${name.slice(0, 80)}" is not allowed`, {
      hint: 'use 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit',
    });
  }
  return name;
}

/** A locally administered unicast MAC, stable for a seed so a VM keeps it wherever it runs. */
export function macFromSeed(seed: Buffer): string {
  const b = Buffer.from(seed.subarray(0, 3));
  return ['52', '54', '00', ...[...b].map((x) => x.toString(16).padStart(2, '0'))].join(':');
}
