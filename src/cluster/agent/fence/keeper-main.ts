/**
 * The fence keeper of one host: `node keeper-main.js DATA/fence/keeper.json`. A small process
 * apart from the daemon that holds the host's liveness lease (`alive/NAME`, TTL 4 s, renewed
 * every second) and fences the host's guarded VMs (HA and protected, listed in guarded.json)
 * the moment it cannot renew that lease:
 *
 *   a renewal is sent at t and succeeds  =>  etcd keeps the key until at least t + TTL
 *   no renewal sent after t succeeded by t + fenceAfter (< TTL)  =>  SIGKILL the guarded QEMUs
 *
 * So by the time the key is gone and the leader may start a guarded VM elsewhere, this host has
 * already killed its copy, whether it was cut off (partition), its etcd member lost quorum, or
 * it was frozen (a thawed keeper sees its last renewal is stale and fences before anything
 * else runs long). Being apart from the daemon is the point: a daemon restart or crash changes
 * nothing for the VMs, and a host whose processes are all killed stops renewing at once.
 */
import { performance } from 'node:perf_hooks';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createLogger } from '../../../core/log.js';
import { sleep } from '../../../core/process.js';
import { findProcessesMentioning } from '../../../host/proc-scan.js';
import { Store } from '../../state/store.js';
import { writeJsonFile } from '../../../core/atomic-file.js';
import { keys } from '../../state/keys.js';
import { keeperStatePath, readGuarded, type KeeperConfig, type KeeperState } from './files.js';

const TICK_MS = 100;
/**
 * Renewals go out this often (not etcd3's TTL/3), each on its own: an etcd leader election
 * (about a second) then costs a few failed renewals, not a fence.
 */
const RENEW_MS = 400;
const MAX_IN_FLIGHT = 6;

async function main(configPath: string): Promise<number> {
  const cfg = JSON.parse(await readFile(configPath, 'utf8')) as KeeperConfig;
  const log = createLogger({ json: true, base: { keeper: process.pid, host: cfg.hostName } });
  const store = new Store(cfg.endpoints);
  const since = new Date().toISOString();
  const state: KeeperState = { pid: process.pid, leaseOk: false, lastOkAt: null, since, fencedAt: null, fenced: [] };
  /** Monotonic send time of the last renewal that succeeded; 0 before the first lease. */
  let lastOk = 0;
  let lastOkWall = 0;
  let fencedSinceOk = false;
  let stopping = false;
  let lease: ReturnType<Store['client']['lease']> | undefined;
  let writing: Promise<void> = Promise.resolve();

  let savedAt = 0;
  const save = (): void => {
    savedAt = Date.now();
    const snap = { ...state };
    writing = writing.then(() =>
      writeJsonFile(keeperStatePath(cfg.dataDir), snap).catch((err: unknown) =>
        log.warn('cannot write keeper state', { err: String(err) }),
      ),
    );
  };

  const fence = async (why: string): Promise<void> => {
    fencedSinceOk = true;
    state.leaseOk = false;
    const ids = await readGuarded(cfg.dataDir).catch(() => [] as string[]);
    const killed: string[] = [];
    for (const id of ids) {
      // The VM's QEMU and vdisk name its run dir on their command lines.
      const procs = await findProcessesMentioning(join(cfg.dataDir, 'run', id) + '/');
      for (const p of procs) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
      if (procs.length) killed.push(id);
    }
    state.fencedAt = new Date().toISOString();
    state.fenced = killed;
    log.warn('fenced: the host cannot renew its liveness lease', { why, killed });
    save();
  };

  const grant = async (): Promise<void> => {
    for (;;) {
      if (stopping) return;
      try {
        const l = store.client.lease(cfg.ttlS, { autoKeepAlive: false });
        l.on('lost', () => {
          if (lease !== l || stopping) return;
          log.warn('liveness lease lost; taking a new one');
          lease = undefined;
          setTimeout(() => void grant(), 300).unref();
        });
        const sentAt = performance.now();
        const id = await l.grant();
        lease = l;
        await store.put(keys.alive(cfg.hostName), { name: cfg.hostName, since, keeper: process.pid }, { lease: id });
        lastOk = sentAt;
        lastOkWall = Date.now() - (performance.now() - sentAt);
        fencedSinceOk = false;
        state.leaseOk = true;
        state.lastOkAt = new Date(lastOkWall).toISOString();
        save();
        log.info('holding the liveness lease', { lease: id });
        return;
      } catch (err) {
        log.warn('cannot take a liveness lease yet', { err: String(err) });
        await sleep(500);
      }
    }
  };

  // SIGTERM: the host stops being a cluster host (no guarded VM runs): give the lease back so
  // it shows lost at once. SIGUSR2: a new keeper replaces this one: keep the key alive.
  const stop = new Promise<string>((done) => {
    process.once('SIGTERM', () => done('SIGTERM'));
    process.once('SIGINT', () => done('SIGINT'));
    process.once('SIGUSR2', () => done('SIGUSR2'));
  });
  process.on('SIGHUP', () => undefined);

  let inFlight = 0;
  const renew = (): void => {
    const l = lease;
    if (!l || inFlight >= MAX_IN_FLIGHT) return;
    const sentAt = performance.now();
    inFlight++;
    l.keepaliveOnce()
      .then(() => {
        if (lease !== l || sentAt < lastOk) return;
        lastOk = sentAt;
        lastOkWall = Date.now() - (performance.now() - sentAt);
        state.lastOkAt = new Date(lastOkWall).toISOString();
        // A late renewal still counts: the lease never lapsed, so nobody took the VMs over;
        // the daemon restarts what this keeper fenced if its host still owns it.
        const was = state.leaseOk;
        fencedSinceOk = false;
        state.leaseOk = true;
        if (!was || Date.now() - savedAt > 1000) save();
      })
      .catch(() => undefined) // a lapsed lease also emits 'lost'; anything else: the next try
      .finally(() => inFlight--);
  };
  const renewTimer = setInterval(renew, RENEW_MS);
  /** Other hosts in the cluster at the last look (null: not known yet, so fence). */
  let peers: number | null = null;
  const countPeers = (): void =>
    void store
      .list<{ name: string }>('hosts/')
      .then((hs) => (peers = hs.filter((h) => h.value.name !== cfg.hostName).length))
      .catch(() => undefined);
  countPeers();
  const peersTimer = setInterval(countPeers, 5000);

  void grant();
  const timer = setInterval(() => {
    if (!existsSync(cfg.dataDir)) {
      // The host's data dir is gone (a test or `lab down` removed it): nothing left to keep.
      process.kill(process.pid, 'SIGTERM');
      return;
    }
    if (lastOk > 0 && !fencedSinceOk && performance.now() - lastOk > cfg.fenceAfterMs) {
      if (peers === 0) {
        // No other host exists to start these VMs: a fence would only take them down.
        fencedSinceOk = true;
        log.warn('no renewal, but this host is alone in its cluster: not fencing');
      } else void fence(`no renewal succeeded for ${Math.round(performance.now() - lastOk)} ms`);
    }
  }, TICK_MS);

  const signal = await stop;
  stopping = true;
  clearInterval(timer);
  clearInterval(renewTimer);
  clearInterval(peersTimer);
  const l = lease;
  lease = undefined;
  if (signal === 'SIGUSR2') {
    // Not revoked: the new keeper puts the key under its own lease before this one lapses, so
    // the host never looks lost while its guarded VMs run. Until then nobody fences: the gap
    // is the replacement time.
    log.info('handing over to a new keeper', { signal });
  } else {
    log.info('stopping; giving the liveness lease back', { signal });
    await Promise.race([l?.revoke().catch(() => undefined), sleep(2000)]);
  }
  state.leaseOk = false;
  save();
  await writing;
  store.close();
  return 0;
}

main(process.argv[2] ?? '').then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`fence keeper failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
