/**
 * This host's side of fencing (the keeper itself is fence/keeper-main.ts, a process apart):
 * keep the keeper's list of guarded VMs (HA or protected, owned here) current, decide whether
 * a VM may restart here (the runner's restart gate), and after a self-fence either restart the
 * fenced VMs (the lease came back before anyone took them: ownership is confirmed in a
 * transaction against this host's liveness key) or clean up after them (they run elsewhere).
 * The decisions are pure functions, tested without QEMU or etcd.
 */
import type { KeyedLock } from '../../core/keyed-lock.js';
import type { Logger } from '../../core/log.js';
import type { Runtime, RuntimeStatus } from '../runtime/runtime.js';
import type { VmRecord } from '../state/model.js';
import type { State } from '../state/state.js';
import { readGuarded, writeGuarded, type KeeperState } from './fence/files.js';
import { readKeeperState } from './fence/keeper-process.js';

/**
 * Whether the keeper holds its lease. The keeper writes leaseOk=false the moment it fences;
 * the age bound only catches a keeper that stopped writing altogether (dead or frozen), as it
 * saves a renewal at most once a second and may lag on a loaded machine.
 */
export function leaseHeld(st: KeeperState | undefined, now: number, ttlMs: number): boolean {
  return !!st?.leaseOk && !!st.lastOkAt && now - Date.parse(st.lastOkAt) < ttlMs;
}

/**
 * The restart gate: a VM restarts here only while this host owns it (a VM that failed over
 * while this host was down must not come back here too), and a guarded one only while the
 * keeper's lease is fresh. An owner unknown (etcd out of reach) means no.
 */
export function mayRestart(o: {
  owner: string | undefined;
  hostName: string;
  guarded: boolean;
  leaseHeld: boolean;
}): boolean {
  if (o.owner !== o.hostName) return false;
  return !o.guarded || o.leaseHeld;
}

export type AfterFence = 'nothing' | 'cleanup' | 'restart' | 'wait';

/** What to do about a VM the keeper killed, once this host holds its lease again. */
export function afterFence(o: {
  runtime: RuntimeStatus['state'];
  owner: string | undefined;
  hostName: string;
  desired: VmRecord['desired'] | undefined;
  alive: boolean;
}): AfterFence {
  if (o.runtime === 'running' || o.runtime === 'paused') return 'nothing';
  if (o.owner !== o.hostName) return 'cleanup';
  // Stopped meanwhile by its owner: nothing to bring back.
  if (o.desired !== 'running') return 'nothing';
  // The lease file says held but the key is not there yet: the next tick decides.
  if (!o.alive) return 'wait';
  return 'restart';
}

export interface FencingDeps {
  hostName: string;
  dataDir: string;
  state: State;
  runtime: Runtime;
  locks: KeyedLock;
  log: Logger;
  /** Liveness lease TTL of the keeper. */
  ttlMs: number;
  /** Starts a VM (restart after a fence). */
  start: (vm: VmRecord) => Promise<void>;
}

export class Fencing {
  /** VMs the keeper killed (or whose restart the gate held) that may restart here later. */
  private readonly pending = new Set<string>();
  private lastFencedAt: string | null = null;
  private guarding = false;

  constructor(private readonly d: FencingDeps) {}

  async init(): Promise<void> {
    this.lastFencedAt = (await readKeeperState(this.d.dataDir))?.fencedAt ?? null;
  }

  /** VMs this host must never run once it may have lost them: HA or protected, owned here. */
  guardedIds(): string[] {
    return this.d.state.vms
      .ownedBy(this.d.hostName)
      .filter((v) => v.ha?.enabled || this.d.state.protection.isProtected(v.id))
      .map((v) => v.id);
  }

  async syncGuarded(extra: string[] = []): Promise<void> {
    const ids = [...new Set([...this.guardedIds(), ...extra])].sort();
    if (JSON.stringify(ids) !== JSON.stringify(await readGuarded(this.d.dataDir)))
      await writeGuarded(this.d.dataDir, ids);
  }

  async leaseHeld(): Promise<boolean> {
    return leaseHeld(await readKeeperState(this.d.dataDir), Date.now(), this.d.ttlMs);
  }

  /** The runner's restart gate; the owner is read from the store, not the cache. */
  async mayRestart(id: string): Promise<boolean> {
    const owner = await this.d.state.vms.fresh(id).then(
      (r) => r?.value.host,
      () => undefined,
    );
    const guarded = (await readGuarded(this.d.dataDir)).includes(id);
    return mayRestart({ owner, hostName: this.d.hostName, guarded, leaseHeld: guarded && (await this.leaseHeld()) });
  }

  /** A restart the gate held: the guard restarts it once this host surely owns the VM again. */
  hold(id: string): void {
    this.pending.add(id);
  }

  /** One guard step (every tick). */
  async guard(): Promise<void> {
    if (this.guarding) return;
    this.guarding = true;
    try {
      await this.syncGuarded();
      const st = await readKeeperState(this.d.dataDir);
      if (st?.fencedAt && st.fencedAt !== this.lastFencedAt) {
        this.lastFencedAt = st.fencedAt;
        for (const id of st.fenced) this.pending.add(id);
        this.d.log.warn('the fence keeper killed guarded VMs: this host lost its lease', { vms: st.fenced });
      }
      if (!this.pending.size || !leaseHeld(st, Date.now(), this.d.ttlMs)) return;
      const aliveRev = await this.d.state.hosts.freshAliveRev(this.d.hostName);
      for (const id of [...this.pending]) {
        await this.d.locks
          .run(id, () => this.afterFence(id, aliveRev))
          .then(
            (done) => done && this.pending.delete(id),
            (err: unknown) => this.d.log.warn('after a fence', { vm: id, err: String(err) }),
          );
      }
    } catch (err) {
      this.d.log.warn('guard step failed', { err: String(err) });
    } finally {
      this.guarding = false;
    }
  }

  /** Returns whether the VM is dealt with (else it stays pending). */
  private async afterFence(id: string, aliveRev: string | undefined): Promise<boolean> {
    const rec = await this.d.state.vms.fresh(id);
    const action = afterFence({
      runtime: (await this.d.runtime.status(id)).state,
      owner: rec?.value.host,
      hostName: this.d.hostName,
      desired: rec?.value.desired,
      alive: aliveRev !== undefined,
    });
    if (action === 'nothing') return true;
    if (action === 'wait') return false;
    if (action === 'cleanup') {
      this.d.log.warn('a fenced VM runs elsewhere now; removing what is left of it here', {
        vm: id,
        owner: rec?.value.host,
      });
      await this.d.runtime.cleanup(id);
      return true;
    }
    if (!(await this.d.state.vms.confirmOwner(rec!, this.d.hostName, aliveRev!)))
      throw new Error('ownership changed while confirming it');
    this.d.log.warn('restarting a fenced VM: this host kept it', { vm: rec!.value.name });
    await this.d.start(rec!.value);
    return true;
  }
}
