/**
 * The host's own configuration, `DATA_DIR/config.json`, written by the administrator (it is not
 * in etcd: it says what this machine lets the daemon touch). Read on every use, so an edit
 * applies at once without a restart; a file that does not parse refuses the call that needed
 * it rather than falling back to something more permissive.
 *
 *     { "importDirs": ["/srv/isos"], "exportDirs": ["/srv/appliances"],
 *       "vmUsers": { "first": 200000000, "count": 10000 } }
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { FdError, isErrno } from '../core/errors.js';
import { DEFAULT_VM_USERS } from './confine/vm-users.js';

const AbsoluteDir = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => isAbsolute(p), 'must be an absolute path');

export const HostConfigSchema = z.strictObject({
  /** Directories `image import` and `ovf import` may read by path, besides DATA_DIR/import. */
  importDirs: z.array(AbsoluteDir).max(64).default([]),
  /** Directories `ovf export` may write into, besides DATA_DIR/export. */
  exportDirs: z.array(AbsoluteDir).max(64).default([]),
  /** The reserved ids of VMs' own users (host/confine/vm-users.ts): the shared group, then slots. */
  vmUsers: z
    .strictObject({
      first: z.number().int().min(1000).max(4_000_000_000),
      count: z.number().int().min(1).max(1_000_000),
    })
    .default(DEFAULT_VM_USERS),
});
export type HostConfig = z.output<typeof HostConfigSchema>;

export const hostConfigPath = (dataDir: string): string => join(dataDir, 'config.json');

export async function loadHostConfig(dataDir: string): Promise<HostConfig> {
  const path = hostConfigPath(dataDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return HostConfigSchema.parse({});
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new FdError('FD_HOST_CONFIG_INVALID', `${path} is not JSON`, { hint: 'fix the file', cause: err });
  }
  const parsed = HostConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const what = parsed.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new FdError('FD_HOST_CONFIG_INVALID', `${path}: ${what}`, {
      hint: 'keys: importDirs, exportDirs (arrays of absolute paths), vmUsers ({first, count})',
    });
  }
  return parsed.data;
}

/** Where path imports may read: DATA_DIR/import and the configured directories. */
export async function importDirs(dataDir: string): Promise<string[]> {
  return [join(dataDir, 'import'), ...(await loadHostConfig(dataDir)).importDirs];
}

/** Where `ovf export` may write: DATA_DIR/export and the configured directories. */
export async function exportDirs(dataDir: string): Promise<string[]> {
  return [join(dataDir, 'export'), ...(await loadHostConfig(dataDir)).exportDirs];
}
