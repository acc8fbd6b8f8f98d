/**
 * An agentless malware scan of one disk: open a view (view.ts), find its volumes, mount what
 * can be mounted, list the files and hand them to clamscan; every volume's outcome is in the
 * result, so one damaged partition does not hide the others. Paths in the result are the
 * guest's (`p1:/etc/passwd` is volume p1, path /etc/passwd). The view goes away on every path.
 */
import { join } from 'node:path';
import { Progress, type ProgressListener } from '../../core/progress.js';
import { clamVersion, clamscan, checkDatabase } from './clamav.js';
import { mountVolumes, type MountedVolume } from './mounts.js';
import { closeView, openView, type ViewSource, type ViewState } from './view.js';
import { listVolumes, type Volume } from './volumes.js';
import { walkFiles, type FileEntry } from './walk.js';

export interface VolumeReport {
  name: string;
  fsType: string;
  sizeBytes: number;
  status: 'scanned' | 'skipped' | 'error';
  files?: number;
  error?: { code: string; message: string };
}

export interface ScanResult {
  volumes: VolumeReport[];
  infected: Array<{ volume: string; path: string; signature: string }>;
  unreadable: Array<{ volume: string; path: string; message: string }>;
  files: number;
  bytes: number;
  engine: string;
  databaseDir: string;
  startedAt: string;
  finishedAt: string;
}

export interface ViewRunOptions {
  source: ViewSource;
  cliCommand: string[];
  stateDir?: string;
}

export interface MountedDisk {
  view: ViewState;
  volumes: Volume[];
  mounted: MountedVolume[];
}

/** Opens a view, mounts its volumes, runs `fn`, and takes everything down again. */
export async function withMountedDisk<T>(o: ViewRunOptions, fn: (d: MountedDisk) => Promise<T>): Promise<T> {
  const view = await openView(o);
  try {
    const volumes = await listVolumes(view.fuseFile);
    const mounted = await mountVolumes(view, volumes);
    return await fn({ view, volumes, mounted });
  } finally {
    await closeView(view);
  }
}

export function volumeReports(d: MountedDisk, files: Map<string, number>): VolumeReport[] {
  return d.volumes.map((v) => ({
    name: v.name,
    fsType: v.fsType,
    sizeBytes: v.sizeBytes,
    status: v.error ? 'error' : files.has(v.name) ? 'scanned' : 'skipped',
    ...(files.has(v.name) ? { files: files.get(v.name)! } : {}),
    ...(v.error ? { error: v.error } : {}),
  }));
}

export async function scanDisk(
  o: ViewRunOptions & { databaseDir: string; onProgress?: ProgressListener; signal?: AbortSignal },
): Promise<ScanResult> {
  await checkDatabase(o.databaseDir); // before any view exists: bad input changes nothing
  const startedAt = new Date().toISOString();
  const engine = (await clamVersion()).split('/')[0] ?? 'ClamAV';
  return withMountedDisk(o, async (d) => {
    const perVolume = new Map<string, number>();
    const all: Array<{ vol: MountedVolume; f: FileEntry }> = [];
    for (const m of d.mounted) {
      const files = await walkFiles(m.dir);
      perVolume.set(m.volume.name, files.length);
      for (const f of files) all.push({ vol: m, f });
    }
    const bytes = all.reduce((s, x) => s + x.f.sizeBytes, 0);
    const progress = new Progress(all.length, o.onProgress, 'items');
    progress.report(0, `scanning ${all.length} files on ${d.mounted.length} volumes`, true);
    const hostPaths = all.map((x) => x.vol.dir + x.f.path);
    const res = await clamscan({
      files: hostPaths,
      databaseDir: o.databaseDir,
      listFile: join(d.view.dir, 'files.txt'),
      onFile: (n) => progress.report(n),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    progress.finish('scan done');
    const guestPath = (hostPath: string): { volume: string; path: string } => {
      const m = d.mounted.find((x) => hostPath.startsWith(x.dir + '/'));
      return m ? { volume: m.volume.name, path: hostPath.slice(m.dir.length) } : { volume: '?', path: hostPath };
    };
    return {
      volumes: volumeReports(d, perVolume),
      infected: res.infected.map((i) => ({ ...guestPath(i.file), signature: i.signature })),
      unreadable: res.errors.map((e) => ({ ...guestPath(e.file), message: e.message })),
      files: all.length,
      bytes,
      engine,
      databaseDir: o.databaseDir,
      startedAt,
      finishedAt: new Date().toISOString(),
    };
  });
}
