/**
 * Reads an appliance, .ova or .ovf with its files beside it, in one forward pass: the
 * descriptor is parsed, the manifest and signature checked, and every referenced file is handed
 * to `onFile` as a stream (gunzipped and de-chunked) while its digest is computed on the fly,
 * so an importer converts each disk exactly once, straight out of the archive.
 */
import { open, stat } from 'node:fs/promises';
import { FdError, isErrno } from '../core/errors.js';
import { readOva } from './package-ova.js';
import { readOvfDir } from './package-dir.js';

export { decodeDescriptor } from './package-common.js';
export type { PackageFile, ReadPackageOptions, PackageMember, PackageReport } from './package-types.js';
import type { ReadPackageOptions, PackageReport } from './package-types.js';

/** True when the file starts like a tar archive rather than XML. */
async function looksLikeTar(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    if (bytesRead < 512) return false;
    return (
      buf.toString('latin1', 257, 262) === 'ustar' || !/^\s*(<|\uFEFF|\xEF\xBB\xBF)/.test(buf.toString('latin1', 0, 16))
    );
  } finally {
    await fh.close();
  }
}

export async function readPackage(path: string, opts: ReadPackageOptions = {}): Promise<PackageReport> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new FdError('FD_OVF_NOT_FOUND', `${path} does not exist`, { cause: err });
    throw err;
  }
  if (st.isDirectory()) throw new FdError('FD_OVF_NOT_FOUND', `${path} is a directory; pass the .ovf or .ova file`);
  const tar =
    path.toLowerCase().endsWith('.ova') || (!path.toLowerCase().endsWith('.ovf') && (await looksLikeTar(path)));
  return tar ? readOva(path, st.size, opts) : readOvfDir(path, opts);
}
