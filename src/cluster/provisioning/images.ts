/**
 * Images on this host: the built-in tiny image (built from Debian packages and copied in under
 * its content key), imports of ISOs and disk images (converted to VHD), and deletion of an
 * image no VM uses.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { produceFileAtomic } from '../../core/atomic-file.js';
import { FdError } from '../../core/errors.js';
import { importDirs } from '../../host/host-config.js';
import { importImageFile } from '../../host/image-import.js';
import { buildTinyImage, withProbes } from '../../host/images/tiny.js';
import { copyPrivate } from '../../host/private-files.js';
import { openImportSource } from '../../host/import-paths.js';
import type { ImageRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import type { TaskHandle } from '../state/tasks.js';

export interface BuiltImage {
  key: string;
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  diskSizeBytes: number;
}

export class Images {
  readonly dir: string;

  constructor(private readonly o: { state: State; dataDir: string; hostName: string }) {
    this.dir = join(o.dataDir, 'images');
  }

  /** Where uploads are spooled before their import (the only place an upload import reads). */
  get uploadsDir(): string {
    return join(this.dir, '.uploads');
  }

  /** `probes`: VMs of the image boot with the console probes on (tests, benchmarks). */
  async buildTiny(force: boolean, t: TaskHandle, probes = false): Promise<ImageRecord> {
    t.log('building the tiny image from Debian packages (cached after the first build)');
    const img = await buildTinyImage({ force, onProgress: (p) => t.progress(p) });
    return this.registerTiny(probes ? withProbes(img) : img);
  }

  /** Copies a built tiny image into the data dir under its content key and records it. */
  async registerTiny(img: BuiltImage): Promise<ImageRecord> {
    const base = join(this.dir, `tiny-${img.key.slice(0, 12)}`);
    const disk = `${base}.vhd`;
    const existing = this.o.state.catalog.findImage('tiny');
    if (existing?.path === disk && existing.cmdline === img.cmdline) return existing;
    await mkdir(this.dir, { recursive: true });
    for (const [from, to] of [
      [img.disk, disk],
      [img.kernel, `${base}.vmlinuz`],
      [img.initrd, `${base}.initrd`],
    ] as const) {
      await produceFileAtomic(to, (tmp) => copyPrivate(from, tmp));
    }
    const rec: ImageRecord = {
      name: 'tiny',
      kind: 'disk',
      path: disk,
      format: 'vhd',
      sizeBytes: img.diskSizeBytes,
      kernel: `${base}.vmlinuz`,
      initrd: `${base}.initrd`,
      cmdline: img.cmdline,
      host: this.o.hostName,
      createdAt: new Date().toISOString(),
    };
    await this.o.state.catalog.putImage(rec);
    return rec;
  }

  /**
   * Imports `file` as image NAME: a path import reads only from the host's import directories,
   * an upload only its own spool file (see host/import-paths.ts).
   */
  async import(name: string, file: string, t: TaskHandle, opts: { upload?: boolean } = {}): Promise<ImageRecord> {
    const dirs = opts.upload ? [this.uploadsDir] : await importDirs(this.o.dataDir);
    const src = await openImportSource(file, dirs, { notFound: 'FD_IMAGE_FILE_NOT_FOUND' });
    let made;
    try {
      made = await importImageFile(src, opts.upload ? `the upload of ${name}` : file, this.dir, name, {
        log: (m) => t.log(m),
        onProgress: (p) => t.progress(p),
        signal: t.signal,
      });
    } finally {
      await src.close();
    }
    const rec: ImageRecord = {
      name,
      ...made,
      kernel: null,
      initrd: null,
      cmdline: null,
      host: this.o.hostName,
      createdAt: new Date().toISOString(),
    };
    if (!(await this.o.state.catalog.createImage(rec))) {
      await rm(rec.path, { force: true });
      throw new FdError('FD_IMAGE_EXISTS', `an image named ${name} exists`, { hint: 'choose another name' });
    }
    return rec;
  }

  async delete(name: string): Promise<ImageRecord> {
    const img = this.o.state.catalog.getImage(name);
    const users = this.o.state.vms
      .records()
      .filter((v) => v.image === name || v.kernelImage === name || v.cdroms.some((c) => c.image === name));
    if (users.length) {
      throw new FdError('FD_IMAGE_BUSY', `image ${name} is used by ${users.map((u) => u.name).join(', ')}`, {
        hint: 'delete those VMs first',
      });
    }
    await this.o.state.catalog.removeImage(name);
    for (const p of [img.path, img.kernel, img.initrd]) if (p && p.startsWith(this.dir)) await rm(p, { force: true });
    return img;
  }
}
