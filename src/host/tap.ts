/**
 * Tap devices, one per bridged NIC: created and attached to the bridge before QEMU starts (QEMU
 * opens it by name with script=no), removed when the VM stops. Names derive from the VM's uuid
 * and the NIC id, so a repairing runner finds the same name again.
 */
import { createHash } from 'node:crypto';
import { FdError } from '../core/errors.js';
import { run } from '../core/process.js';

/** "fdt" + 11 hex digits: 14 characters, under Linux's 15-character interface name limit. */
export function tapName(vmUuid: string, nicId: string): string {
  return 'fdt' + createHash('sha256').update(`${vmUuid}/${nicId}`).digest('hex').slice(0, 11);
}

export async function linkExists(name: string): Promise<boolean> {
  const r = await run('ip', ['-o', 'link', 'show', 'dev', name], { allowFail: true });
  return r.code === 0;
}

/** `owner`: the user QEMU runs as, who may then attach to the tap without any privilege. */
export async function createTap(tap: string, bridge: string, owner?: number): Promise<void> {
  if (!(await linkExists(bridge))) {
    throw new FdError('FD_NET_BRIDGE_NOT_FOUND', `bridge ${bridge} does not exist`, {
      hint: 'create the network first, or attach the NIC to an existing bridge',
    });
  }
  await deleteTap(tap); // a leftover from a killed runner
  const who = owner === undefined ? [] : ['user', String(owner), 'group', String(owner)];
  await run('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap', ...who]);
  try {
    await run('ip', ['link', 'set', 'dev', tap, 'master', bridge]);
    await run('ip', ['link', 'set', 'dev', tap, 'up']);
  } catch (err) {
    await deleteTap(tap);
    throw err;
  }
}

export async function deleteTap(tap: string): Promise<void> {
  if (await linkExists(tap)) await run('ip', ['link', 'del', 'dev', tap], { allowFail: true });
}
