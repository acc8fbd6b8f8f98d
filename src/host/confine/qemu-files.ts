/**
 * What a confined QEMU may open, handed over instead of reached by path: it runs as its VM's
 * own user, who can read nothing of the data dir. Block files (raw and qcow2 disks, ISOs, the
 * UEFI variable store) are opened here and inherited as descriptors in fd sets (QEMU opens
 * `/dev/fdset/N`, which duplicates them); kernel and initrd, which QEMU reads with a plain
 * open(), are copied into QEMU's own directory. And the command that starts QEMU as that user:
 * setpriv with no capabilities, no new privileges, and only the groups it needs.
 */
import { constants } from 'node:fs';
import { chown, copyFile, open, stat, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { VmSpec } from '../../qemu/spec.js';
import type { VmUsers } from './vm-users.js';

export interface QemuFiles {
  /** Where QEMU finds each file the spec names (LaunchContext.files). */
  files: Record<string, string>;
  addFds: { fd: number; set: number }[];
  /** Descriptors to pass as the child's fds 3, 4, ...: in addFds order. */
  childFds: number[];
  /** Closes our copies once QEMU has its own. */
  close(): Promise<void>;
}

/** The first descriptor number after stdin, stdout and stderr. */
const FIRST_FD = 3;

export async function prepareQemuFiles(
  spec: VmSpec,
  opts: { uefiVars?: string; qemuDir: string; users: VmUsers },
): Promise<QemuFiles> {
  const handles: FileHandle[] = [];
  const out: QemuFiles = {
    files: {},
    addFds: [],
    childFds: [],
    close: async () => {
      for (const h of handles) await h.close().catch(() => undefined);
    },
  };
  let set = 0;
  const pass = async (path: string, writable: boolean): Promise<void> => {
    if (out.files[path]) return;
    set++;
    // QEMU dups the descriptor whose access mode matches its open(): give both for a writable file.
    for (const flags of writable ? [constants.O_RDONLY, constants.O_RDWR] : [constants.O_RDONLY]) {
      const fh = await open(path, flags);
      handles.push(fh);
      out.addFds.push({ fd: FIRST_FD + out.childFds.length, set });
      out.childFds.push(fh.fd);
    }
    out.files[path] = `/dev/fdset/${set}`;
  };
  const copy = async (path: string, as: string): Promise<void> => {
    const dest = join(opts.qemuDir, as);
    await copyFile(path, dest);
    await chown(dest, opts.users.qemuUid, opts.users.qemuUid);
    out.files[path] = dest;
  };
  try {
    for (const d of spec.disks) if (d.source.kind !== 'vhd') await pass(d.source.path, !d.readOnly);
    for (const c of spec.cdroms) if (c.iso) await pass(c.iso, false);
    if (opts.uefiVars) await pass(opts.uefiVars, true);
    if ('kernel' in spec.boot) {
      await copy(spec.boot.kernel.kernel, `kernel-${basename(spec.boot.kernel.kernel)}`);
      if (spec.boot.kernel.initrd) await copy(spec.boot.kernel.initrd, `initrd-${basename(spec.boot.kernel.initrd)}`);
    }
    return out;
  } catch (err) {
    await out.close();
    throw err;
  }
}

/**
 * The group of /dev/kvm when that is how the VM's user can open it; undefined when everyone can,
 * null when only root can (then QEMU must open it before dropping root: the -runas fallback).
 */
export async function kvmAccess(): Promise<number | undefined | null> {
  const st = await stat('/dev/kvm').catch(() => undefined);
  if (!st) return null;
  if ((st.mode & 0o006) === 0o006) return undefined;
  if ((st.mode & 0o060) === 0o060 && st.gid !== 0) return st.gid;
  return null;
}

/** Whether any user may open /dev/net/tun (udev's usual 0666): then QEMU opens its tap itself. */
export async function tunOpenToAll(): Promise<boolean> {
  const st = await stat('/dev/net/tun').catch(() => undefined);
  return !!st && (st.mode & 0o006) === 0o006;
}

/** The command prefix that runs the rest as the VM's QEMU user, without any privilege. */
export function asVmUser(users: VmUsers, extraGroups: number[] = []): string[] {
  return [
    'setpriv',
    `--reuid=${users.qemuUid}`,
    `--regid=${users.qemuUid}`,
    `--groups=${[users.sharedGid, ...extraGroups].join(',')}`,
    '--inh-caps=-all',
    '--bounding-set=-all',
    '--no-new-privs',
    '--',
  ];
}
