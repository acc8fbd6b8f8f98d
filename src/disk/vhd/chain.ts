/**
 * Finding a differencing disk's parent. The child names its parent several ways: up to eight
 * parent locators (W2ru relative and W2ku absolute Windows paths in UTF-16LE, MacX file URLs in
 * UTF-8) and the parent's file name. We try each in a stable order and return every path we
 * tried, so a missing parent is an error that says where we looked. The caller checks the UUID.
 */
import type { FileHandle } from 'node:fs/promises';
import { stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isErrno } from '../../core/errors.js';
import { decodeUtf16, type DynamicHeader, type ParentLocator } from './dynamic-header.js';
import { readAt } from './io.js';

export const MAX_CHAIN_DEPTH = 64;
/** A locator longer than this is not a path; refuse to allocate for it. */
const MAX_LOCATOR_BYTES = 64 * 1024;

export interface LocatorPath {
  platformCode: string;
  raw: string;
}

/** Reads the text of each locator that lies inside the file; broken ones are skipped (check.ts reports them). */
export async function readLocators(fh: FileHandle, header: DynamicHeader, fileSize: number): Promise<LocatorPath[]> {
  const out: LocatorPath[] = [];
  for (const loc of header.locators) {
    if (!locatorInFile(loc, fileSize)) continue;
    const bytes = await readAt(fh, loc.dataOffset, loc.dataLength, `parent locator ${loc.platformCode}`);
    const raw = decodeLocator(loc.platformCode, bytes);
    if (raw) out.push({ platformCode: loc.platformCode, raw });
  }
  return out;
}

export function locatorInFile(loc: ParentLocator, fileSize: number): boolean {
  return (
    loc.dataLength > 0 &&
    loc.dataLength <= MAX_LOCATOR_BYTES &&
    loc.dataOffset >= 512 &&
    loc.dataOffset + loc.dataLength <= fileSize
  );
}

function decodeLocator(code: string, bytes: Buffer): string | null {
  switch (code) {
    case 'W2ku':
    case 'W2ru':
      return decodeUtf16(bytes, 'le');
    case 'Wi2k':
    case 'Wi2r':
      return bytes.toString('latin1').replace(/\0.*$/s, '');
    case 'MacX':
      return bytes.toString('utf8').replace(/\0.*$/s, '');
    default:
      return null;
  }
}

/** A Windows path as a host path: backslashes become slashes, a drive letter cannot be mapped. */
function hostPath(raw: string, childDir: string): string | null {
  if (raw.startsWith('file://')) {
    try {
      return fileURLToPath(raw);
    } catch {
      return null;
    }
  }
  const p = raw.replace(/\\/g, '/');
  if (/^[A-Za-z]:\//.test(p) || p.startsWith('//')) return null;
  return isAbsolute(p) ? p : resolve(childDir, p);
}

function winBasename(raw: string): string {
  return basename(raw.replace(/\\/g, '/'));
}

/** Candidate paths for the parent, most specific first, without duplicates. */
export function parentCandidates(
  childPath: string,
  header: DynamicHeader,
  locators: LocatorPath[],
  extraDirs: string[] = [],
): string[] {
  const childDir = dirname(resolve(childPath));
  const out: string[] = [];
  const add = (p: string | null): void => {
    if (p && !out.includes(p)) out.push(p);
  };
  const order = ['W2ru', 'Wi2r', 'W2ku', 'Wi2k', 'MacX'];
  const sorted = [...locators].sort((a, b) => order.indexOf(a.platformCode) - order.indexOf(b.platformCode));
  for (const l of sorted) add(hostPath(l.raw, childDir));
  // Windows absolute paths (C:\VMs\base.vhd) cannot be followed here; their file name beside the child can.
  const names = [header.parentName, ...sorted.map((l) => l.raw)].filter(Boolean).map(winBasename);
  for (const dir of [childDir, ...extraDirs.map((d) => resolve(d))]) {
    for (const n of names) if (n && n !== '.' && n !== '..') add(join(dir, n));
  }
  return out;
}

export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR') || isErrno(err, 'ENAMETOOLONG')) return false;
    throw err;
  }
}
