/**
 * Starting, finding and stopping a host's fence keeper (keeper-main.ts). The daemon ensures one
 * runs with its current config when it starts, and leaves it running when it stops while
 * guarded VMs run here (their liveness must not depend on the daemon). A keeper with an older
 * config (another etcd, another host name) is replaced.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { FdError } from '../../../core/errors.js';
import { sleep, tail } from '../../../core/process.js';
import { readJsonFile, writeJsonFile } from '../../../core/atomic-file.js';
import { identify, isRunning, terminate, waitGone, type ProcIdentity } from '../../../host/pidfile.js';
import {
  fenceDir,
  keeperConfigPath,
  keeperLogPath,
  keeperPidPath,
  keeperStatePath,
  type KeeperConfig,
  type KeeperState,
} from './files.js';

export const KEEPER_MAIN = fileURLToPath(new URL('./keeper-main.js', import.meta.url));

async function runningKeeper(dataDir: string): Promise<ProcIdentity | undefined> {
  const id = await readJsonFile<ProcIdentity>(keeperPidPath(dataDir));
  return id && isRunning(id) ? id : undefined;
}

export function readKeeperState(dataDir: string): Promise<KeeperState | undefined> {
  return readJsonFile<KeeperState>(keeperStatePath(dataDir));
}

/** Ensures a keeper with this config runs and holds the lease; resolves with its state. */
export async function ensureKeeper(cfg: KeeperConfig, timeoutMs = 20_000): Promise<KeeperState> {
  await mkdir(fenceDir(cfg.dataDir), { recursive: true });
  const same = JSON.stringify(await readJsonFile<KeeperConfig>(keeperConfigPath(cfg.dataDir))) === JSON.stringify(cfg);
  let id = await runningKeeper(cfg.dataDir);
  if (id && !same) {
    // Handover, not stop: the old keeper leaves the key alive for the new one.
    process.kill(id.pid, 'SIGUSR2');
    if (!(await waitGone(id, 3000))) await terminate(id, 0);
    id = undefined;
  }
  if (!id) {
    await writeJsonFile(keeperConfigPath(cfg.dataDir), cfg);
    await rm(keeperStatePath(cfg.dataDir), { force: true });
    const log = await open(keeperLogPath(cfg.dataDir), 'a');
    let child;
    try {
      child = spawn(process.execPath, [KEEPER_MAIN, keeperConfigPath(cfg.dataDir)], {
        detached: true,
        stdio: ['ignore', log.fd, log.fd],
      });
    } finally {
      await log.close();
    }
    child.unref();
    id = child.pid === undefined ? undefined : identify(child.pid);
    if (!id) throw await keeperFailed(cfg.dataDir, 'exited at once');
    await writeFile(keeperPidPath(cfg.dataDir), JSON.stringify(id) + '\n');
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await readKeeperState(cfg.dataDir);
    if (st?.pid === id.pid && st.leaseOk) return st;
    if (!isRunning(id)) throw await keeperFailed(cfg.dataDir, 'exited');
    // A keeper that runs but has no lease yet (etcd slow or out of reach) keeps trying on its
    // own; the daemon goes on (its host shows lost until the keeper gets one).
    if (Date.now() > deadline)
      return st ?? { pid: id.pid, leaseOk: false, lastOkAt: null, since: '', fencedAt: null, fenced: [] };
    await sleep(50);
  }
}

/** Stops the keeper for good (no guarded VM runs here): it gives the lease back, the host shows lost. */
export async function stopKeeper(dataDir: string): Promise<void> {
  const id = await runningKeeper(dataDir);
  if (id) await terminate(id, 5000);
}

async function keeperFailed(dataDir: string, what: string): Promise<FdError> {
  const log = await readFile(keeperLogPath(dataDir), 'utf8').catch(() => '');
  return new FdError('FD_KEEPER_START_FAILED', `the fence keeper ${what}: ${tail(log, 6)}`, {
    hint: 'check that etcd answers (flightdeck cluster status) and see DATA/fence/keeper.log',
  });
}
