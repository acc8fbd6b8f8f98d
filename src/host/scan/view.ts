/**
 * A scan's view of a VM disk: something we may read, and even write, without the guest's disk
 * ever changing. The source is an image (served read-only by our vdisk process) or an NBD
 * socket (a running VM's point-in-time export from QEMU, qemu/fleece.ts). qemu-storage-daemon
 * opens it read-only and puts a throwaway qcow2 overlay on top, exported writable over FUSE:
 * journal replay on mount (ext4, XFS) lands in the overlay, so a crash-consistent disk mounts
 * cleanly and the guest's data is untouched. Loop devices over the FUSE file carry each
 * filesystem (volumes.ts finds them); mounts are read-only.
 *
 * Every piece is recorded in `<stateDir>/<id>/state.json` as soon as it exists, so
 * `cleanupViews` (at daemon start) or `closeView` takes down whatever a killed scan left:
 * mounts, loop devices, qemu-storage-daemon, vdisk, the overlay.
 */
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../core/atomic-file.js';
import { FdError, isErrno } from '../../core/errors.js';
import { newTaskId } from '../../core/ids.js';
import { run, sleep, tail, waitFor } from '../../core/process.js';
import { identify, isRunning, signalIdentity, waitGone, type ProcIdentity } from '../pidfile.js';
import { spawnVdisk } from '../mount.js';

export const DEFAULT_SCAN_STATE_DIR = '/run/flightdeck/scans';

/** A daemon's own scan views (under its data dir, so one daemon's start never touches another's). */
export const scanStateDir = (dataDir: string): string => join(dataDir, 'scans');

export type ViewSource = { kind: 'image'; path: string } | { kind: 'nbd'; socket: string; export?: string };

export interface ViewState {
  version: 1;
  id: string;
  dir: string;
  source: ViewSource;
  vdisk: ProcIdentity | null;
  qsd: ProcIdentity | null;
  fuseFile: string;
  loops: string[];
  /** Mount points, in the order they were mounted. */
  mounts: string[];
}

export interface ViewOptions {
  source: ViewSource;
  /** argv prefix that runs the flightdeck CLI (for the vdisk process of an image source). */
  cliCommand: string[];
  stateDir?: string;
}

const stateFile = (dir: string): string => join(dir, 'state.json');

export async function saveView(v: ViewState): Promise<void> {
  await writeFileAtomic(stateFile(v.dir), JSON.stringify(v, null, 2) + '\n');
}

export async function openView(o: ViewOptions): Promise<ViewState> {
  const id = newTaskId();
  const dir = join(o.stateDir ?? DEFAULT_SCAN_STATE_DIR, id);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const v: ViewState = {
    version: 1,
    id,
    dir,
    source: o.source,
    vdisk: null,
    qsd: null,
    fuseFile: join(dir, 'disk'),
    loops: [],
    mounts: [],
  };
  await saveView(v);
  try {
    let socket: string;
    let exportName = '';
    if (o.source.kind === 'image') {
      socket = join(dir, 'nbd.sock');
      const pid = await spawnVdisk({
        cliCommand: o.cliCommand,
        image: o.source.path,
        socket,
        readOnly: true,
        logFile: join(dir, 'vdisk.log'),
      });
      v.vdisk = identify(pid) ?? null;
      await saveView(v);
    } else {
      socket = o.source.socket;
      exportName = o.source.export ?? '';
    }
    const overlay = join(dir, 'overlay.qcow2');
    const uri = `nbd+unix:///${exportName}?socket=${socket}`;
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', uri, overlay]);
    await writeFile(v.fuseFile, '');
    const pidFile = join(dir, 'qsd.pid');
    const nbd = `driver=nbd,node-name=src,server.type=unix,server.path=${socket},read-only=on`;
    const r = await run(
      'qemu-storage-daemon',
      [
        '--blockdev',
        exportName ? `${nbd},export=${exportName}` : nbd,
        '--blockdev',
        `driver=file,node-name=ovl-file,filename=${overlay}`,
        '--blockdev',
        'driver=qcow2,node-name=view,file=ovl-file,backing=src',
        '--export',
        `type=fuse,id=fuse0,node-name=view,mountpoint=${v.fuseFile},writable=on`,
        '--daemonize',
        '--pidfile',
        pidFile,
      ],
      { allowFail: true },
    );
    if (r.code !== 0)
      throw new FdError('FD_SCAN_VIEW_FAILED', `could not open the disk for scanning: ${tail(r.stderr, 4)}`);
    v.qsd = identify(Number((await readFile(pidFile, 'utf8')).trim())) ?? null;
    await saveView(v);
    return v;
  } catch (err) {
    await closeView(v).catch(() => undefined);
    throw err;
  }
}

/**
 * Takes down what the record says is up, last piece first; safe to repeat. A scan killed while
 * a mount or losetup was in flight leaves pieces the record does not name yet: mounts under the
 * view's dir and loop devices on its FUSE file are found from the kernel's tables instead.
 */
export async function closeView(v: ViewState): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const mounts = [...new Set([...v.mounts, ...(await mountsUnder(v.dir + '/mnt/'))])].reverse();
    for (const m of mounts) {
      if (!(await isMounted(m))) continue;
      const r = await run('umount', [m], { allowFail: true });
      if (r.code !== 0 && (await isMounted(m))) await run('umount', ['-l', m], { allowFail: true });
    }
    v.mounts = [];
    await saveView(v).catch(() => undefined);
    for (const loop of await loopsOn(v.fuseFile)) {
      await run('losetup', ['-d', loop], { allowFail: true });
      await waitFor('loop release', async () => ((await loopBacking(loop)) === v.fuseFile ? undefined : true), {
        timeoutMs: 10_000,
      }).catch(() => undefined);
    }
    v.loops = [];
    if ((await mountsUnder(v.dir + '/mnt/')).length === 0 && (await loopsOn(v.fuseFile)).length === 0) break;
    if (attempt >= 20) throw new FdError('FD_SCAN_CLEANUP_STUCK', `could not take down the scan view in ${v.dir}`);
    await sleep(250); // a mount helper of a killed scan may still be finishing
  }
  if (v.qsd && isRunning(v.qsd)) {
    signalIdentity(v.qsd, 'SIGTERM');
    if (!(await waitGone(v.qsd, 15_000))) signalIdentity(v.qsd, 'SIGKILL');
  }
  if (await isMounted(v.fuseFile)) await run('umount', ['-l', v.fuseFile], { allowFail: true });
  if (v.vdisk && isRunning(v.vdisk)) {
    signalIdentity(v.vdisk, 'SIGTERM');
    if (!(await waitGone(v.vdisk, 15_000))) signalIdentity(v.vdisk, 'SIGKILL');
  }
  await rm(v.dir, { recursive: true, force: true });
}

async function mountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m.startsWith(prefix));
}

async function loopsOn(file: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir('/sys/block').catch(() => [] as string[]))
    if (name.startsWith('loop') && (await loopBacking(`/dev/${name}`)) === file) out.push(`/dev/${name}`);
  return out;
}

/** Closes every view a killed scan left behind (the daemon calls this at start). */
export async function cleanupViews(stateDir = DEFAULT_SCAN_STATE_DIR): Promise<number> {
  let names: string[];
  try {
    names = await readdir(stateDir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return 0;
    throw err;
  }
  let n = 0;
  for (const name of names) {
    const dir = join(stateDir, name);
    const text = await readFile(stateFile(dir), 'utf8').catch(() => null);
    if (text === null) {
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    await closeView(JSON.parse(text) as ViewState);
    n++;
  }
  return n;
}

export async function isMounted(path: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => unescape(l.split(' ')[4] ?? '') === path);
}

const unescape = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

async function loopBacking(loop: string): Promise<string | null> {
  try {
    return (await readFile(`/sys/block/${loop.replace('/dev/', '')}/loop/backing_file`, 'utf8')).trim();
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}
