/**
 * Opening the files beside an .ovf. A daemon importing an appliance reads them as root, so in
 * confined mode a member must be a regular file inside the package's directory: not a symbolic
 * link (a "disk.img -> /etc/shadow" beside a vendor's descriptor would copy the host's file into
 * a guest disk) and not reached through a linked directory that leads elsewhere.
 */
import { constants } from 'node:fs';
import { open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';

function unsafe(name: string, why: string): FdError {
  return new FdError('FD_OVF_UNSAFE_HREF', `${name} ${why}; an import reads only files inside the package`, {
    hint: 'replace links with the files themselves (or import the .ova)',
  });
}

/** Opens `dir/name` for reading; with `confined`, refuses links and files outside `dir`. */
export async function openMember(dir: string, name: string, confined: boolean): Promise<FileHandle> {
  if (!confined) return open(join(dir, name), 'r');
  let fh: FileHandle;
  try {
    fh = await open(join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isErrno(err, 'ELOOP')) throw unsafe(name, 'is a symbolic link');
    throw err;
  }
  try {
    if (!(await fh.stat()).isFile()) throw unsafe(name, 'is not a regular file');
    const real = await readlink(`/proc/self/fd/${fh.fd}`);
    const root = await realpath(dir);
    if (!real.startsWith(root + sep)) throw unsafe(name, `resolves outside the package (${real})`);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** A member's bytes, or undefined when it does not exist. */
export async function readMemberOptional(dir: string, name: string, confined: boolean): Promise<Buffer | undefined> {
  let fh: FileHandle;
  try {
    fh = await openMember(dir, name, confined);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
  try {
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}
