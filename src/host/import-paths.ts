/**
 * Host paths the API may name. The daemon runs as root, so a path in a request is a request to
 * read (or write) anything on the machine: imports read only regular files inside the import
 * directories (host-config.ts), exports write only inside the export directories. A file is
 * opened once, without following a symbolic link, and its real location is read back from the
 * open descriptor; readers then use `/proc/PID/fd/N`, the same inode, so the file cannot be
 * swapped for another between the check and the conversion.
 */
import { constants } from 'node:fs';
import { lstat, open, readlink, realpath, type FileHandle } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { FdError, isErrno, type ErrorCode } from '../core/errors.js';

export interface ImportSource {
  /** Path that reopens the checked file (the open descriptor): give this to readers. */
  path: string;
  /** Where the file really is. */
  realPath: string;
  sizeBytes: number;
  close(): Promise<void>;
}

const inside = (path: string, dir: string): boolean =>
  path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

/** The real paths of the directories that exist (a missing one allows nothing). */
async function realDirs(dirs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of dirs) {
    try {
      out.push(await realpath(d));
    } catch (err) {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
    }
  }
  return out;
}

function notAllowed(file: string, dirs: string[], verb: 'read' | 'write'): FdError {
  return new FdError(
    'FD_PATH_NOT_ALLOWED',
    `${file} is outside the directories this host lets the API ${verb} (${dirs.join(', ')})`,
    {
      hint:
        verb === 'read'
          ? 'put the file in one of them, add its directory to importDirs in DATA_DIR/config.json, or upload it'
          : 'write into one of them, or add the directory to exportDirs in DATA_DIR/config.json',
    },
  );
}

/** The file's real path when its directory exists, else its absolute path as written. */
async function realLocation(file: string): Promise<string> {
  try {
    return join(await realpath(dirname(file)), basename(file));
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return resolve(file);
    throw err;
  }
}

/** Whether `file` lies inside `dir`, both resolved through any links (false when `dir` is missing). */
export async function isInsideDir(file: string, dir: string): Promise<boolean> {
  const [real] = await realDirs([dir]);
  return real !== undefined && isAbsolute(file) && inside(await realLocation(file), real);
}

export interface OpenImportOptions {
  /** Code for a file that does not exist (each caller has its own: FD_IMAGE_FILE_NOT_FOUND...). */
  notFound: ErrorCode;
}

/**
 * Opens `file` for an import when it is a regular file, not a symbolic link, inside one of
 * `dirs`. Refusals: FD_BAD_PATH (relative), FD_PATH_NOT_ALLOWED (outside; said before whether it
 * exists, so the API tells nothing about other files), FD_IMPORT_SYMLINK, FD_IMPORT_NOT_A_FILE.
 */
export async function openImportSource(file: string, dirs: string[], opts: OpenImportOptions): Promise<ImportSource> {
  if (!isAbsolute(file))
    throw new FdError('FD_BAD_PATH', `"${file}" is not an absolute path`, { hint: 'give the full path' });
  const allowed = await realDirs(dirs);
  const where = await realLocation(file);
  if (!allowed.some((d) => inside(where, d))) throw notAllowed(file, dirs, 'read');
  let fh: FileHandle;
  try {
    fh = await open(where, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (isErrno(err, 'ELOOP'))
      throw new FdError('FD_IMPORT_SYMLINK', `${file} is a symbolic link; imports read only regular files`, {
        hint: 'import the file it points to (from an import directory), or copy it there',
      });
    if (isErrno(err, 'ENOENT')) throw new FdError(opts.notFound, `${file} does not exist`, { cause: err });
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile())
      throw new FdError('FD_IMPORT_NOT_A_FILE', `${file} is not a regular file`, {
        hint: 'imports read regular files (not devices, directories or pipes)',
      });
    // The descriptor's own path: the truth even if a directory on the way was swapped meanwhile.
    const real = await readlink(`/proc/self/fd/${fh.fd}`);
    if (!allowed.some((d) => inside(real, d))) throw notAllowed(file, dirs, 'read');
    return {
      path: `/proc/${process.pid}/fd/${fh.fd}`,
      realPath: real,
      sizeBytes: st.size,
      close: () => fh.close(),
    };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** Checks that an import would be allowed, without keeping the file open. */
export async function checkImportSource(file: string, dirs: string[], opts: OpenImportOptions): Promise<string> {
  const src = await openImportSource(file, dirs, opts);
  await src.close();
  return src.realPath;
}

/**
 * Where an export may be written: `out` inside one of `dirs` (its directory resolved through any
 * links), not an existing file or link. Returns the real path to write.
 */
export async function checkExportTarget(out: string, dirs: string[]): Promise<string> {
  if (!isAbsolute(out))
    throw new FdError('FD_BAD_PATH', `"${out}" is not an absolute path`, { hint: 'give the full path' });
  const allowed = await realDirs(dirs);
  const where = await realLocation(out);
  if (!allowed.some((d) => inside(dirname(where), d))) throw notAllowed(out, dirs, 'write');
  try {
    await lstat(where); // a dangling link counts: writing would follow it
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return where;
    throw err;
  }
  throw new FdError('FD_FILE_EXISTS', `${out} already exists`, { hint: 'remove it or choose another --out' });
}
