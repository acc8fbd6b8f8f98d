/**
 * Builds and caches `tiny`, flightdeck's test and demo guest: the Debian cloud kernel, an
 * initramfs with busybox and the virtio modules, and a root filesystem (busybox, the probes of
 * guest/fdprobe.c, the scripts under guest/rootfs) on a dynamic VHD. Boot it with direct kernel
 * boot: `-kernel vmlinuz -initrd initrd.img -append TINY_CMDLINE`, disk.vhd on virtio-blk.
 *
 * The cache key hashes every input (exact package versions, guest files, compiler and mke2fs
 * versions, this recipe's code), so an image is built once per input set and reused. A build
 * runs in a temp dir beside the cache entry and is renamed into place when complete; a lock
 * file keeps concurrent builders from duplicating work, and the rename keeps them from
 * corrupting each other if the lock is ever bypassed.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import {
  access,
  chmod,
  copyFile,
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { fsyncDir, writeFileAtomic } from '../../core/atomic-file.js';
import { FdError, isErrno } from '../../core/errors.js';
import { pidAlive, run, sleep } from '../../core/process.js';
import { Progress, type ProgressListener } from '../../core/progress.js';
import { COUNTER_OFFSET_BYTES } from './counter.js';
import { writeCpio, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, type CpioEntry } from './cpio.js';
import { downloadPackages, extractDeb, resolveKernelPackage, resolvePackage, type DebPackage } from './debian.js';
import { TINY_INITRAMFS_MODULES, TINY_ROOTFS_MODULES, builtinModules, collectModules } from './kernel-modules.js';
import { makeExt4 } from './rootfs.js';
import { rawToDynamicVhd } from './vhd.js';

export { TINY_CMDLINE, TINY_PROBES_ARG, TINY_PROBE_CMDLINE, withProbes } from './cmdline.js';
import { TINY_CMDLINE } from './cmdline.js';
/** The cache's link to the image built last. */
const CURRENT_LINK = 'current';

/** Guest TCP echo service port (fd.echo_port= on the cmdline changes it). */
export const TINY_ECHO_PORT = 7;
export const TINY_DISK_BYTES = 64 * 1024 * 1024;
/** The ext4 root fills the disk up to here; the counter record lives beyond it. */
export const TINY_FS_BYTES = 48 * 1024 * 1024;
export const TINY_MIN_MEMORY_BYTES = 128 * 1024 * 1024;

/** Fixed so rebuilds are byte-identical; nothing in the guest depends on these values. */
const EPOCH_S = 1704067200; // 2024-01-01T00:00:00Z
const FS_UUID = '6f1d0c52-7d0b-4f3a-9a55-1f6c1a7e0001';
const FS_HASH_SEED = '6f1d0c52-7d0b-4f3a-9a55-1f6c1a7e0002';

export interface TinyImagePaths {
  dir: string;
  kernel: string;
  initrd: string;
  /** Dynamic VHD holding the root filesystem and the durable counter. */
  disk: string;
  manifest: string;
}

export interface TinyImage extends TinyImagePaths {
  key: string;
  cmdline: string;
  echoPort: number;
  counterOffsetBytes: number;
  diskSizeBytes: number;
  packages: DebPackage[];
  /** False when the image came from the cache. */
  built: boolean;
}

export interface BuildTinyOptions {
  /** Cache root; the image lands in `<cacheDir>/tiny/<key>`. */
  cacheDir?: string;
  /** Rebuild even when the cache holds this key (and ask apt afresh for package versions). */
  force?: boolean;
  onProgress?: ProgressListener;
}

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const GUEST_DIR = join(REPO_ROOT, 'guest');

export function defaultImageCacheDir(): string {
  return process.env['FLIGHTDECK_IMAGE_CACHE'] || '/var/cache/flightdeck/images';
}

/**
 * Where an image's artifacts are. Without `dir`: the most recently built tiny image under the
 * cache (`<cache>/tiny/current`), without building or asking apt anything. (`latest` is the link
 * of the images from before fd.probes=1, whose probes always ran: code of that time reads it.)
 */
export function tinyImagePaths(dir = join(defaultImageCacheDir(), 'tiny', CURRENT_LINK)): TinyImagePaths {
  return {
    dir,
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.img'),
    disk: join(dir, 'disk.vhd'),
    manifest: join(dir, 'manifest.json'),
  };
}

/** Files of the guest/ tree (docs aside) with their contents, sorted by path: an input of the cache key. */
async function guestFiles(rel = ''): Promise<Array<{ path: string; data: Buffer }>> {
  const out: Array<{ path: string; data: Buffer }> = [];
  for (const name of (await readdir(join(GUEST_DIR, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if ((await stat(join(GUEST_DIR, r))).isDirectory()) out.push(...(await guestFiles(r)));
    else if (!name.endsWith('.md')) out.push({ path: r, data: await readFile(join(GUEST_DIR, r)) });
  }
  return out;
}

/** The recipe itself: the compiled modules that decide what ends up in the image. */
const RECIPE_MODULES = ['tiny.js', 'cpio.js', 'rootfs.js', 'kernel-modules.js', 'debian.js', 'vhd.js'];

async function toolVersions(): Promise<Record<string, string>> {
  const gcc = (await run('gcc', ['-dumpfullversion'])).stdout.trim();
  const libc = (await run('dpkg-query', ['-W', '-f=${Version}', 'libc6-dev'], { allowFail: true })).stdout.trim();
  const mke2fs = (await run('mke2fs', ['-V'], { allowFail: true })).stderr.split('\n')[0]!.trim();
  return { gcc, libc, mke2fs, zlib: process.versions.zlib ?? '' };
}

interface Inputs {
  key: string;
  kernel: DebPackage;
  busybox: DebPackage;
}

interface ResolvedTools {
  stamp: string;
  kernel: DebPackage;
  busybox: DebPackage;
  tools: Record<string, string>;
}

/**
 * A fingerprint of what apt-cache and the tool versions depend on: the package lists and the
 * dpkg database. While it is unchanged, the last resolution is reused, because asking apt-cache
 * takes seconds on a busy host and every test that wants the image asks.
 */
async function aptStamp(): Promise<string> {
  const parts: string[] = [`zlib ${process.versions.zlib ?? ''}`];
  for (const p of [
    '/var/lib/dpkg/status',
    '/etc/apt/preferences',
    '/etc/apt/preferences.d',
    '/etc/apt/sources.list.d',
  ]) {
    const st = await stat(p).catch(() => null);
    parts.push(`${p} ${st ? `${st.size} ${st.mtimeMs}` : '-'}`);
  }
  const lists = '/var/lib/apt/lists';
  for (const name of (await readdir(lists).catch(() => [] as string[])).sort()) {
    const st = await stat(join(lists, name)).catch(() => null);
    if (st?.isFile()) parts.push(`${name} ${st.size} ${st.mtimeMs}`);
  }
  return createHash('sha256').update(parts.join('\n')).digest('hex');
}

async function resolveTools(cacheRoot: string, fresh: boolean): Promise<ResolvedTools> {
  const memo = join(cacheRoot, '.inputs.json');
  const stamp = await aptStamp();
  if (!fresh) {
    const prev = await readFile(memo, 'utf8').then(
      (t) => JSON.parse(t) as ResolvedTools,
      () => null,
    );
    if (prev?.stamp === stamp) return prev;
  }
  const [kernel, busybox, tools] = await Promise.all([
    resolveKernelPackage(),
    resolvePackage('busybox-static'),
    toolVersions(),
  ]);
  const resolved = { stamp, kernel, busybox, tools };
  await writeFileAtomic(memo, JSON.stringify(resolved));
  return resolved;
}

async function resolveInputs(cacheRoot: string, fresh: boolean): Promise<Inputs> {
  const { kernel, busybox, tools } = await resolveTools(cacheRoot, fresh);
  const h = createHash('sha256');
  const here = dirname(fileURLToPath(import.meta.url));
  for (const m of RECIPE_MODULES) h.update(`recipe ${m}\0`).update(await readFile(join(here, m)));
  for (const f of await guestFiles()) h.update(`guest ${f.path}\0`).update(f.data);
  h.update(
    JSON.stringify({
      kernel,
      busybox,
      tools,
      modules: [TINY_INITRAMFS_MODULES, TINY_ROOTFS_MODULES],
    }),
  );
  return { key: h.digest('hex').slice(0, 16), kernel, busybox };
}

/** Builds the tiny image unless the cache already holds it; returns where its artifacts are. */
export async function buildTinyImage(opts: BuildTinyOptions = {}): Promise<TinyImage> {
  const cacheRoot = join(opts.cacheDir ?? defaultImageCacheDir(), 'tiny');
  try {
    await mkdir(cacheRoot, { recursive: true });
    await access(cacheRoot, fsConstants.W_OK);
  } catch (err) {
    if (!['EACCES', 'EPERM', 'ENOTDIR', 'EEXIST', 'EROFS'].some((c) => isErrno(err, c))) throw err;
    throw new FdError('FD_IMAGE_CACHE_UNWRITABLE', `cannot use ${cacheRoot} as the image cache`, {
      hint: 'set FLIGHTDECK_IMAGE_CACHE (or pass cacheDir) to a writable directory',
      cause: err,
    });
  }
  const inputs = await resolveInputs(cacheRoot, opts.force ?? false);
  const finalDir = join(cacheRoot, inputs.key);
  const result = (built: boolean): TinyImage => ({
    ...tinyImagePaths(finalDir),
    key: inputs.key,
    cmdline: TINY_CMDLINE,
    echoPort: TINY_ECHO_PORT,
    counterOffsetBytes: COUNTER_OFFSET_BYTES,
    diskSizeBytes: TINY_DISK_BYTES,
    packages: [inputs.kernel, inputs.busybox],
    built,
  });
  if (!opts.force && (await isComplete(finalDir))) {
    await pointLatest(cacheRoot, inputs.key);
    return result(false);
  }
  const release = await lock(join(cacheRoot, `.lock-${inputs.key}`));
  try {
    // Another builder may have finished while we waited for the lock.
    if (!opts.force && (await isComplete(finalDir))) return result(false);
    // The pid in the name lets a later build clear what a killed builder left behind.
    const work = join(cacheRoot, `.build-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      await buildInto(work, inputs, opts.onProgress);
      if (await isComplete(finalDir)) {
        const old = `${finalDir}.old-${randomBytes(4).toString('hex')}`;
        await rename(finalDir, old);
        await rename(join(work, 'out'), finalDir);
        await rm(old, { recursive: true, force: true });
      } else {
        await rm(finalDir, { recursive: true, force: true });
        await rename(join(work, 'out'), finalDir);
      }
      await fsyncDir(cacheRoot);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    await pointLatest(cacheRoot, inputs.key);
    await pruneOld(cacheRoot, inputs.key);
    return result(true);
  } finally {
    await release();
  }
}

async function isComplete(dir: string): Promise<boolean> {
  // manifest.json is written last: its presence means every artifact is there.
  try {
    await stat(join(dir, 'manifest.json'));
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** Images kept besides the current one: older inputs (kernel updates, guest edits) age out. */
const KEEP_OLD_IMAGES = 3;

async function pruneOld(cacheRoot: string, current: string): Promise<void> {
  const entries: Array<{ name: string; mtimeMs: number }> = [];
  for (const name of await readdir(cacheRoot)) {
    const builder = /^\.build-(\d+)-/.exec(name);
    if (builder && !pidAlive(Number(builder[1]))) await rm(join(cacheRoot, name), { recursive: true, force: true });
    if (name === current || name === 'latest' || name === CURRENT_LINK || name.startsWith('.')) continue;
    const st = await stat(join(cacheRoot, name, 'manifest.json')).catch(() => null);
    if (st) entries.push({ name, mtimeMs: st.mtimeMs });
  }
  entries.sort((x, y) => y.mtimeMs - x.mtimeMs);
  for (const e of entries.slice(KEEP_OLD_IMAGES)) await rm(join(cacheRoot, e.name), { recursive: true, force: true });
}

async function pointLatest(cacheRoot: string, key: string): Promise<void> {
  const link = join(cacheRoot, CURRENT_LINK);
  const current = await readlink(link).catch(() => null);
  if (current === key) return;
  const tmp = join(cacheRoot, `.latest-${randomBytes(4).toString('hex')}`);
  await symlink(key, tmp);
  await rename(tmp, link);
}

/** An exclusive lock file holding the owner's pid; a lock whose owner died is taken over. */
async function lock(path: string): Promise<() => Promise<void>> {
  for (;;) {
    try {
      const fh = await open(path, fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
    }
    const owner = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (owner && owner !== process.pid && !pidAlive(owner)) {
      // Stale: rename first so two waiters cannot both delete a fresh lock.
      const stale = `${path}.stale-${randomBytes(4).toString('hex')}`;
      await rename(path, stale).catch(() => undefined);
      await rm(stale, { force: true });
      continue;
    }
    await sleep(250);
  }
}

const STEPS = 7;

async function buildInto(work: string, inputs: Inputs, onProgress?: ProgressListener): Promise<void> {
  const progress = new Progress(STEPS, onProgress, 'items', 0);
  let step = 0;
  const next = (msg: string): void => progress.report(step++, msg, true);
  const out = join(work, 'out');
  await mkdir(out, { recursive: true });

  next(`downloading ${inputs.kernel.name} ${inputs.kernel.version} and busybox-static ${inputs.busybox.version}`);
  const debs = join(work, 'debs');
  await mkdir(debs);
  const [kernelDeb, busyboxDeb] = await downloadPackages([inputs.kernel, inputs.busybox], debs);

  next('extracting packages');
  const kdir = join(work, 'kernel');
  const bbdir = join(work, 'busybox');
  await extractDeb(kernelDeb!, kdir);
  await extractDeb(busyboxDeb!, bbdir);
  const kver = (await readdir(join(kdir, 'lib/modules')))[0];
  if (!kver) throw new FdError('FD_IMAGE_BUILD_FAILED', `${inputs.kernel.name} holds no modules directory`);
  const busybox = join(bbdir, 'bin/busybox');
  const busyboxData = await readFile(busybox);

  next('compiling the guest probes');
  const fdprobe = join(work, 'fdprobe');
  await run('gcc', [
    '-static',
    '-O2',
    '-s',
    '-Wall',
    '-Wl,--build-id=none',
    `-ffile-prefix-map=${GUEST_DIR}=guest`,
    '-o',
    fdprobe,
    join(GUEST_DIR, 'fdprobe.c'),
  ]).catch((err: unknown) => {
    throw new FdError('FD_IMAGE_BUILD_FAILED', 'cannot compile guest/fdprobe.c', {
      hint: 'install gcc and libc6-dev (scripts/setup.sh does)',
      cause: err,
    });
  });

  next('writing the initramfs');
  const moduleRoot = join(kdir, 'lib/modules', kver);
  const builtin = await builtinModules(moduleRoot);
  const modules = await collectModules(moduleRoot, TINY_INITRAMFS_MODULES, TINY_INITRAMFS_MODULES, builtin);
  const laterModules = await collectModules(
    moduleRoot,
    TINY_ROOTFS_MODULES,
    TINY_ROOTFS_MODULES,
    new Set([...builtin, ...modules.map((m) => m.name)]),
  );
  const applets = (await run(busybox, ['--list'])).stdout.split('\n').filter((a) => a && a !== 'busybox');
  const dir = (name: string): CpioEntry => ({ name, mode: S_IFDIR | 0o755 });
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'lib', 'lib/modules', 'newroot', 'proc', 'sys'].map(dir),
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdevMajor: 5, rdevMinor: 1 },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: busyboxData },
    ...applets.map((a) => ({ name: `bin/${a}`, mode: S_IFLNK | 0o777, data: Buffer.from('busybox') })),
    { name: 'init', mode: S_IFREG | 0o755, data: await readFile(join(GUEST_DIR, 'initramfs/init')) },
    ...modules.map((m) => ({ name: `lib/modules/${m.name}.ko`, mode: S_IFREG | 0o644, data: m.data })),
    {
      name: 'lib/modules/load.order',
      mode: S_IFREG | 0o644,
      data: Buffer.from(modules.map((m) => m.name).join('\n') + '\n'),
    },
  ];
  await writeFile(join(out, 'initrd.img'), gzipSync(writeCpio(entries, EPOCH_S), { level: 9 }));
  await copyFile(join(kdir, 'boot', `vmlinuz-${kver}`), join(out, 'vmlinuz'));

  next('making the root filesystem');
  const root = join(work, 'root');
  await copyGuestTree(join(GUEST_DIR, 'rootfs'), root);
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'root', 'mnt'])
    await mkdir(join(root, d), { recursive: true });
  await chmod(join(root, 'tmp'), 0o1777);
  await copyFile(busybox, join(root, 'bin/busybox'));
  await chmod(join(root, 'bin/busybox'), 0o755);
  for (const full of (await run(busybox, ['--list-full'])).stdout.split('\n').filter(Boolean)) {
    if (full === 'bin/busybox') continue;
    const depth = full.split('/').length - 1;
    await symlink(`${'../'.repeat(depth)}bin/busybox`, join(root, full)).catch((err: unknown) => {
      if (!isErrno(err, 'EEXIST')) throw err;
    });
  }
  await mkdir(join(root, 'lib/modules'), { recursive: true });
  for (const m of laterModules) await writeFile(join(root, 'lib/modules', `${m.name}.ko`), m.data);
  await writeFile(join(root, 'lib/modules/load.order'), laterModules.map((m) => m.name).join('\n') + '\n');
  await copyFile(fdprobe, join(root, 'usr/bin/fdprobe'));
  await chmod(join(root, 'usr/bin/fdprobe'), 0o755);
  const raw = join(work, 'disk.raw');
  await makeExt4({
    path: raw,
    tree: root,
    diskBytes: TINY_DISK_BYTES,
    fsBytes: TINY_FS_BYTES,
    label: 'tiny-root',
    uuid: FS_UUID,
    hashSeed: FS_HASH_SEED,
    epochS: EPOCH_S,
  });

  next('converting the disk to a dynamic VHD');
  await rawToDynamicVhd(raw, join(out, 'disk.vhd'), { epochS: EPOCH_S });

  next('writing the manifest');
  const manifest = {
    name: 'tiny',
    key: inputs.key,
    kernelRelease: kver,
    packages: [inputs.kernel, inputs.busybox],
    cmdline: TINY_CMDLINE,
    echoPort: TINY_ECHO_PORT,
    counterOffsetBytes: COUNTER_OFFSET_BYTES,
    diskSizeBytes: TINY_DISK_BYTES,
    minMemoryBytes: TINY_MIN_MEMORY_BYTES,
    modules: { initramfs: modules.map((m) => m.name), rootfs: laterModules.map((m) => m.name) },
    sha256: {
      vmlinuz: await sha256File(join(out, 'vmlinuz')),
      'initrd.img': await sha256File(join(out, 'initrd.img')),
      'disk.raw': await sha256File(raw),
    },
  };
  for (const f of ['vmlinuz', 'initrd.img', 'disk.vhd']) await fsyncFile(join(out, f));
  await writeFile(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  await fsyncFile(join(out, 'manifest.json'));
  progress.finish('done');
}

/** Copies guest/rootfs; a file is executable exactly when it starts with "#!". */
async function copyGuestTree(src: string, dest: string): Promise<void> {
  await mkdir(dest, { recursive: true });
  for (const name of await readdir(src)) {
    const s = join(src, name);
    const d = join(dest, name);
    const st = await lstat(s);
    if (st.isDirectory()) await copyGuestTree(s, d);
    else {
      const data = await readFile(s);
      await writeFile(d, data);
      await chmod(d, data.subarray(0, 2).toString() === '#!' ? 0o755 : 0o644);
    }
  }
  await chmod(dest, 0o755);
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
