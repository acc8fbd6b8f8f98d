/**
 * Taking a lab down: every process of its hosts (found by namespace, and by its data dir for
 * anything that left), its namespaces, links, bridge, nft table and data dirs. It works from
 * names alone, so it also finishes what a crashed `up` or `down` left behind.
 */
import { readFile, rm, rmdir, stat } from 'node:fs/promises';
import { FdError, isErrno } from '../core/errors.js';
import { run } from '../core/process.js';
import { labDir, LAB_ROOT } from './names.js';
import { hasIsolationTable, labLinks, labNamespaces, netnsExists, removeLabNetwork } from './net.js';
import { killNetns, pidsMentioning, signal, waitExited } from './procs.js';
import { readState } from './state.js';

export interface DownReport {
  prefix: string;
  killed: number;
  namespaces: string[];
  links: string[];
  dataDir: string | null;
}

export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

/** Unmounts anything mounted under `dir` (a disk mount a lab daemon left) before it is removed. */
async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const points = info
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(dir + '/')))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p], { allowFail: true });
}

/** Removes lab `prefix` (already checked) completely, or says what remains. */
export async function destroyLab(prefix: string, step: (message: string) => void): Promise<DownReport> {
  const st = await readState(prefix).catch(() => undefined);
  const namespaces = new Set(await labNamespaces(prefix));
  for (const h of st?.hosts ?? []) if (await netnsExists(h.netns)) namespaces.add(h.netns);
  step(`stopping the processes of ${namespaces.size} hosts`);
  const killed = (await Promise.all([...namespaces].map((ns) => killNetns(ns)))).flat();
  // Anything that left its namespace but still names the lab's data dir goes too.
  const strays = await pidsMentioning(labDir(prefix) + '/');
  signal(strays, 'SIGCONT');
  signal(strays, 'SIGKILL');
  await waitExited(strays, 10_000);
  step('removing namespaces, links, bridge and nft rules');
  const net = await removeLabNetwork(prefix);
  let dataDir: string | null = null;
  if (await pathExists(labDir(prefix))) {
    step(`removing ${labDir(prefix)}`);
    await unmountUnder(labDir(prefix));
    await rm(labDir(prefix), { recursive: true, force: true });
    dataDir = labDir(prefix);
  }
  await rmdir(LAB_ROOT).catch((err: unknown) => {
    // Other labs still live there, or it was never made.
    if (!isErrno(err, 'ENOTEMPTY') && !isErrno(err, 'ENOENT') && !isErrno(err, 'EEXIST')) throw err;
  });
  const left = [
    ...(await labNamespaces(prefix)),
    ...(await labLinks(prefix)),
    ...((await hasIsolationTable(prefix)) ? [`nft table inet fdlab_${prefix}`] : []),
    ...((await pathExists(labDir(prefix))) ? [labDir(prefix)] : []),
  ];
  if (left.length) {
    throw new FdError(
      'FD_LAB_DOWN_INCOMPLETE',
      `lab "${prefix}" was not removed completely: ${left.join(', ')} remain`,
      {
        hint: 'run "flightdeck lab down" again; a busy mount or a process stuck in the kernel can hold a namespace',
      },
    );
  }
  return {
    prefix,
    killed: killed.length + strays.length,
    namespaces: net.namespaces,
    links: net.links,
    dataDir,
  };
}
