/**
 * File integrity from outside the VM: a baseline records path, size, mode, owner and SHA-256 of
 * every regular file under chosen directories (default: the OS's system directories), plus
 * where each file's data lies on the disk (FIEMAP through `filefrag`, as disk byte ranges).
 * Verify walks the same directories and reports what was added, removed and changed.
 *
 * Reading only what changed: given the disk ranges written since the baseline (changed.ts: the
 * sectors of the differencing child taken at baseline time), a file whose size, mode and owner
 * are as before, whose extents (read afresh from the filesystem's metadata now) are the ones
 * recorded, and none of whose extents was written since, has the same bytes: it is not read
 * again. Anything else is hashed: files without a clean extent map (inline data, FUSE
 * filesystems that answer no FIEMAP) always are. Without changed ranges, verify hashes all.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { run } from '../../core/process.js';
import { Progress, type ProgressListener } from '../../core/progress.js';
import { overlaps, type Ranges } from './changed.js';
import type { MountedDisk } from './scan.js';
import { walkFiles } from './walk.js';

export const LINUX_SYSTEM_DIRS = [
  '/bin',
  '/sbin',
  '/lib',
  '/lib64',
  '/usr/bin',
  '/usr/sbin',
  '/usr/lib',
  '/usr/lib64',
  '/etc',
  '/boot',
];
export const WINDOWS_SYSTEM_DIRS = ['/Windows/System32', '/Windows/SysWOW64', '/Program Files', '/Program Files (x86)'];

export interface BaselineEntry {
  volume: string;
  path: string;
  sizeBytes: number;
  mode: number;
  uid: number;
  gid: number;
  sha256: string;
  /** Disk byte ranges of the file's data; null when the filesystem gave no clean map. */
  extents: Ranges | null;
}

export interface Baseline {
  version: 1;
  createdAt: string;
  /** Directories asked for (null: the OS's system directories). */
  dirs: string[] | null;
  entries: BaselineEntry[];
  bytes: number;
}

export interface VerifyResult {
  added: Array<{ volume: string; path: string; sizeBytes: number }>;
  removed: Array<{ volume: string; path: string }>;
  changed: Array<{ volume: string; path: string; what: Array<'size' | 'mode' | 'owner' | 'content'> }>;
  files: number;
  /** Files read and hashed again, and the bytes read. */
  hashed: number;
  hashedBytes: number;
  mode: 'changed-blocks' | 'full';
  verifiedAt: string;
}

type Current = Omit<BaselineEntry, 'sha256' | 'extents'> & { hostPath: string; offsetBytes: number };

async function current(d: MountedDisk, dirs: string[] | null): Promise<Current[]> {
  const out: Current[] = [];
  for (const m of d.mounted) {
    const want = dirs ?? (await systemDirs(m.dir));
    const seen = new Set<string>();
    for (const dir of want) {
      for (const f of await walkFiles(m.dir, dir)) {
        if (seen.has(f.path)) continue;
        seen.add(f.path);
        const st = await lstat(m.dir + f.path);
        out.push({
          volume: m.volume.name,
          path: f.path,
          sizeBytes: st.size,
          mode: st.mode,
          uid: st.uid,
          gid: st.gid,
          hostPath: m.dir + f.path,
          offsetBytes: m.volume.offsetBytes,
        });
      }
    }
  }
  return out;
}

async function systemDirs(root: string): Promise<string[]> {
  if (await lstat(root + '/Windows').catch(() => null)) return WINDOWS_SYSTEM_DIRS;
  return LINUX_SYSTEM_DIRS;
}

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Extents of many files in few `filefrag` runs: disk byte ranges, or null when not clean. */
async function extentsOf(files: Current[]): Promise<Map<string, Ranges | null>> {
  const out = new Map<string, Ranges | null>();
  const BATCH = 400;
  for (let i = 0; i < files.length; i += BATCH) {
    const batch = files.slice(i, i + BATCH);
    const r = await run('filefrag', ['-v', ...batch.map((f) => f.hostPath)], { allowFail: true });
    const byPath = new Map(batch.map((f) => [f.hostPath, f]));
    let cur: { f: Current; block: number; ranges: Ranges; clean: boolean } | null = null;
    const flush = () => {
      if (cur) out.set(cur.f.hostPath, cur.clean ? cur.ranges : null);
      cur = null;
    };
    for (const line of r.stdout.split('\n')) {
      const head = /^File size of (.*) is (\d+) \((\d+) blocks? of (\d+) bytes\)$/.exec(line);
      if (head) {
        flush();
        const f = byPath.get(head[1]!);
        if (f) cur = { f, block: Number(head[4]), ranges: [], clean: true };
        continue;
      }
      const ext = /^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+):\s*(?:\d+:)?\s*(.*)$/.exec(line);
      if (ext && cur) {
        const c: { f: Current; block: number; ranges: Ranges; clean: boolean } = cur;
        const flags = ext[4]!;
        if (/inline|unknown_loc|delalloc|encoded|not_aligned|data_tail|shared/.test(flags)) c.clean = false;
        const start = c.f.offsetBytes + Number(ext[1]) * c.block;
        c.ranges.push([start, start + Number(ext[3]) * c.block]);
      }
    }
    flush();
  }
  return out;
}

export async function takeBaseline(
  d: MountedDisk,
  o: { dirs?: string[] | null; onProgress?: ProgressListener } = {},
): Promise<Baseline> {
  const files = await current(d, o.dirs ?? null);
  const bytes = files.reduce((s, f) => s + f.sizeBytes, 0);
  const progress = new Progress(bytes, o.onProgress, 'bytes');
  const extents = await extentsOf(files);
  const entries: BaselineEntry[] = [];
  for (const f of files) {
    const { hostPath, offsetBytes, ...rest } = f;
    void offsetBytes;
    entries.push({ ...rest, sha256: await sha256(hostPath), extents: extents.get(hostPath) ?? null });
    progress.add(f.sizeBytes);
  }
  progress.finish('baseline taken');
  return { version: 1, createdAt: new Date().toISOString(), dirs: o.dirs ?? null, entries, bytes };
}

const key = (e: { volume: string; path: string }): string => `${e.volume}:${e.path}`;
const sameRanges = (a: Ranges | null, b: Ranges | null): boolean =>
  !!a && !!b && a.length === b.length && a.every((r, i) => r[0] === b[i]![0] && r[1] === b[i]![1]);

export async function verifyBaseline(
  d: MountedDisk,
  base: Baseline,
  o: { changed?: Ranges; onProgress?: ProgressListener } = {},
): Promise<VerifyResult> {
  const now = await current(d, base.dirs);
  const before = new Map(base.entries.map((e) => [key(e), e]));
  const res: VerifyResult = {
    added: [],
    removed: [],
    changed: [],
    files: now.length,
    hashed: 0,
    hashedBytes: 0,
    mode: o.changed ? 'changed-blocks' : 'full',
    verifiedAt: '',
  };
  const common = now.filter((f) => before.has(key(f)));
  const extents = o.changed ? await extentsOf(common) : new Map<string, Ranges | null>();
  const progress = new Progress(common.length, o.onProgress, 'items');
  for (const f of now) {
    const b = before.get(key(f));
    if (!b) {
      res.added.push({ volume: f.volume, path: f.path, sizeBytes: f.sizeBytes });
      continue;
    }
    before.delete(key(f));
    const what: VerifyResult['changed'][number]['what'] = [];
    if (f.sizeBytes !== b.sizeBytes) what.push('size');
    if (f.mode !== b.mode) what.push('mode');
    if (f.uid !== b.uid || f.gid !== b.gid) what.push('owner');
    const ext = extents.get(f.hostPath) ?? null;
    const untouched =
      !!o.changed &&
      what.length === 0 &&
      sameRanges(ext, b.extents) &&
      !ext!.some(([s, e]) => overlaps(o.changed!, s, e));
    if (!untouched) {
      res.hashed++;
      res.hashedBytes += f.sizeBytes;
      if ((await sha256(f.hostPath)) !== b.sha256) what.push('content');
    }
    if (what.length) res.changed.push({ volume: f.volume, path: f.path, what });
    progress.add(1);
  }
  for (const b of before.values()) res.removed.push({ volume: b.volume, path: b.path });
  progress.finish('verified');
  res.verifiedAt = new Date().toISOString();
  return res;
}
