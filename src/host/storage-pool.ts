/**
 * A directory storage pool: VHD volumes in one directory under the data dir (default
 * `<dataDir>/pools/default`), created, grown and deleted through our VHD engine. A volume may be
 * a differencing child of another volume or of a shared base image anywhere (how many VMs start
 * from one image); a volume that is some other volume's parent cannot be deleted.
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';
import { checkName } from '../core/ids.js';
import { createDifferencingVhd, createVhd, type VhdType } from '../disk/vhd/create.js';
import { diskInfo } from '../disk/vhd/info.js';
import { resizeVhd } from '../disk/vhd/resize.js';
import { findProcessesHoldingFile } from './proc-scan.js';

export interface Volume {
  name: string;
  path: string;
  type: 'fixed' | 'dynamic' | 'differencing';
  /** Bytes the guest sees. */
  sizeBytes: number;
  /** Bytes the file takes now. */
  fileBytes: number;
  /** Resolved parent path for a differencing volume. */
  parent: string | null;
}

export interface PoolOptions {
  dataDir: string;
  name?: string;
  /** Directory of the pool; default `<dataDir>/pools/<name>`. */
  path?: string;
}

export class DirectoryPool {
  readonly name: string;
  readonly path: string;

  constructor(opts: PoolOptions) {
    this.name = checkName('pool', opts.name ?? 'default');
    this.path = resolve(opts.path ?? join(opts.dataDir, 'pools', this.name));
  }

  /** Where a volume's file is (whether or not it exists). */
  volumePath(volume: string): string {
    return join(this.path, `${checkName('volume', volume)}.vhd`);
  }

  /** A new empty volume (dynamic by default: it takes space only as the guest writes). */
  async create(volume: string, opts: { sizeBytes: number; type?: VhdType }): Promise<Volume> {
    await mkdir(this.path, { recursive: true });
    const path = this.volumePath(volume);
    await this.assertFree(volume, path);
    await createVhd(path, { sizeBytes: opts.sizeBytes, type: opts.type ?? 'dynamic' });
    return this.get(volume);
  }

  /** A differencing volume over `base`: another volume's name, or the path of a VHD anywhere. */
  async createChild(volume: string, base: string): Promise<Volume> {
    await mkdir(this.path, { recursive: true });
    const path = this.volumePath(volume);
    await this.assertFree(volume, path);
    const parent = base.startsWith('/') ? base : this.volumePath(base);
    await stat(parent).catch((err: unknown) => {
      if (isErrno(err, 'ENOENT')) throw new FdError('FD_POOL_VOLUME_NOT_FOUND', `base image ${parent} does not exist`);
      throw err;
    });
    await createDifferencingVhd(path, parent);
    return this.get(volume);
  }

  /** Grows a volume (shrinking is refused by the engine: it would cut guest data). */
  async resize(volume: string, sizeBytes: number): Promise<Volume> {
    const path = await this.existing(volume);
    await this.assertUnused(volume, path);
    await resizeVhd(path, sizeBytes);
    return this.get(volume);
  }

  async delete(volume: string): Promise<void> {
    const path = await this.existing(volume);
    const children = (await this.list()).filter((v) => v.parent === path);
    if (children.length)
      throw new FdError(
        'FD_POOL_VOLUME_BUSY',
        `volume ${volume} is the parent of ${children.map((c) => c.name).join(', ')}`,
        {
          hint: 'delete or merge the children first',
        },
      );
    await this.assertUnused(volume, path);
    await rm(path);
  }

  async get(volume: string): Promise<Volume> {
    const path = await this.existing(volume);
    const info = await diskInfo(path);
    return {
      name: volume,
      path,
      type: info.type,
      sizeBytes: info.virtualSize,
      fileBytes: info.fileSize,
      parent: info.parent,
    };
  }

  async list(): Promise<Volume[]> {
    let names: string[];
    try {
      names = (await readdir(this.path)).filter((n) => n.endsWith('.vhd') && !n.startsWith('.')).sort();
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return [];
      throw err;
    }
    return Promise.all(names.map((n) => this.get(n.slice(0, -4))));
  }

  private async existing(volume: string): Promise<string> {
    const path = this.volumePath(volume);
    try {
      await stat(path);
    } catch (err) {
      if (isErrno(err, 'ENOENT'))
        throw new FdError('FD_POOL_VOLUME_NOT_FOUND', `no volume ${volume} in pool ${this.name} (${this.path})`);
      throw err;
    }
    return path;
  }

  private async assertFree(volume: string, path: string): Promise<void> {
    try {
      await stat(path);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    throw new FdError('FD_POOL_VOLUME_EXISTS', `volume ${volume} already exists in pool ${this.name}`);
  }

  /** A volume a running VM's vdisk serves must not change under it. */
  private async assertUnused(volume: string, path: string): Promise<void> {
    const users = await findProcessesHoldingFile(path);
    if (users.length)
      throw new FdError(
        'FD_POOL_VOLUME_BUSY',
        `volume ${volume} is in use (pid ${users.map((u) => u.pid).join(', ')})`,
        {
          hint: 'stop the VM using it first',
        },
      );
  }
}
