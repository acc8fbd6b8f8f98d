/**
 * What this host observes of its VMs, published as each VM's status (status/vms/ID). Only the
 * owner speaks for a VM; `since` and `restarts` carry over from the last status this host
 * published.
 */
import type { RuntimeStatus } from '../runtime/runtime.js';
import type { VmStatus } from '../state/model.js';
import type { State } from '../state/state.js';

export class StatusPublisher {
  private readonly last = new Map<string, VmStatus>();

  constructor(private readonly d: { hostName: string; state: State }) {}

  lastOf(id: string): VmStatus | undefined {
    return this.last.get(id);
  }

  /** The VM is not this host's any more (moved, deleted): forget what it last said. */
  forget(id: string): void {
    this.last.delete(id);
  }

  async publish(id: string, st: RuntimeStatus, restarts?: number): Promise<void> {
    const prev = this.last.get(id);
    const status: VmStatus = {
      id,
      host: this.d.hostName,
      state: st.state,
      pid: st.pid,
      since: prev?.state === st.state ? prev.since : new Date().toISOString(),
      lastError: st.lastError ?? (st.state === 'running' ? null : (prev?.lastError ?? null)),
      restarts: restarts ?? prev?.restarts ?? 0,
    };
    // Written only while this host owns the VM: a migration target (before the move) or a
    // source (after it) also runs processes for it, and must not overwrite the owner's word.
    if (await this.d.state.vms.publishStatus(status)) this.last.set(id, status);
  }
}
