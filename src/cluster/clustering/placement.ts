/**
 * Placement: which host a VM goes to. A host qualifies when it is online (not in maintenance,
 * not lost), the VM's memory fits under the memory overcommit limit and its vCPUs under the
 * vCPU overcommit limit, and no VM of the same anti-affinity group runs there; among those the
 * one with the most memory left wins (ties: fewer vCPUs committed, then name). Every decision
 * carries its reasons, which the task log shows.
 */
import { FdError } from '../../core/errors.js';

export interface PlacementHost {
  name: string;
  state: 'online' | 'maintenance' | 'lost';
  cpus: number;
  memoryBytes: number;
}

export interface PlacedVm {
  id: string;
  host: string;
  cpus: number;
  memoryBytes: number;
  antiAffinity: string | null;
  /** Only VMs that run (or should) hold capacity. */
  desired: 'running' | 'stopped';
}

export interface PlacementRequest {
  vmId?: string;
  cpus: number;
  memoryBytes: number;
  pinnedHost?: string | null;
  antiAffinity?: string | null;
  /** Hosts to leave out (the source of a migration). */
  exclude?: string[];
}

export interface PlacementPolicy {
  /** Committed guest memory may reach this multiple of a host's RAM (1.0: no overcommit). */
  memoryOvercommit: number;
  /** Committed vCPUs may reach this multiple of a host's CPUs. */
  cpuOvercommit: number;
  /** Memory kept for the host itself (QEMU overhead, the daemon, etcd). */
  reservedMemoryBytes: number;
}

export const DEFAULT_POLICY: PlacementPolicy = {
  memoryOvercommit: 1.0,
  cpuOvercommit: 8,
  reservedMemoryBytes: 512 * 1024 * 1024,
};

export interface PlacementDecision {
  host: string;
  reasons: string[];
}

const MiB = 1024 * 1024;

export function place(
  req: PlacementRequest,
  hosts: PlacementHost[],
  vms: PlacedVm[],
  policy: PlacementPolicy = DEFAULT_POLICY,
): PlacementDecision {
  const reasons: string[] = [];
  const candidates: { host: PlacementHost; freeMem: number; cpusUsed: number }[] = [];
  for (const h of [...hosts].sort((a, b) => a.name.localeCompare(b.name))) {
    const load = vms.filter((v) => v.host === h.name && v.desired === 'running' && v.id !== req.vmId);
    const memUsed = load.reduce((a, v) => a + v.memoryBytes, 0);
    const cpusUsed = load.reduce((a, v) => a + v.cpus, 0);
    const memLimit = h.memoryBytes * policy.memoryOvercommit - policy.reservedMemoryBytes;
    const freeMem = memLimit - memUsed;
    const why = (text: string): void => {
      reasons.push(`${h.name}: ${text}`);
    };
    if (req.pinnedHost && h.name !== req.pinnedHost) continue;
    if (req.exclude?.includes(h.name)) {
      why('excluded');
      continue;
    }
    if (h.state !== 'online') {
      why(`skipped, ${h.state}`);
      continue;
    }
    if (req.memoryBytes > freeMem) {
      why(
        `skipped, ${Math.round(req.memoryBytes / MiB)} MiB do not fit in ${Math.max(0, Math.round(freeMem / MiB))} MiB free`,
      );
      continue;
    }
    if (cpusUsed + req.cpus > h.cpus * policy.cpuOvercommit) {
      why(`skipped, ${cpusUsed}+${req.cpus} vCPUs exceed ${h.cpus}x${policy.cpuOvercommit}`);
      continue;
    }
    if (req.antiAffinity && load.some((v) => v.antiAffinity === req.antiAffinity)) {
      why(`skipped, runs a VM of anti-affinity group ${req.antiAffinity}`);
      continue;
    }
    why(
      `fits: ${Math.round((freeMem - req.memoryBytes) / MiB)} MiB free after, ${cpusUsed + req.cpus} vCPUs committed`,
    );
    candidates.push({ host: h, freeMem, cpusUsed });
  }
  if (req.pinnedHost && !hosts.some((h) => h.name === req.pinnedHost)) {
    throw new FdError('FD_HOST_NOT_FOUND', `no host named ${req.pinnedHost}`, {
      hint: 'list hosts with "flightdeck host list"',
    });
  }
  candidates.sort((a, b) => b.freeMem - a.freeMem || a.cpusUsed - b.cpusUsed || a.host.name.localeCompare(b.host.name));
  const best = candidates[0];
  if (!best) {
    throw new FdError('FD_NO_HOST_WITH_ROOM', `no host can take this VM: ${reasons.join('; ') || 'no hosts'}`, {
      hint: 'free memory on a host, lower the VM memory, bring a host out of maintenance, or add a host',
      status: 409,
      details: reasons,
    });
  }
  return { host: best.host.name, reasons: [`placed on ${best.host.name} (most memory free)`, ...reasons] };
}

/** What placement needs to know of the cluster, as the state cache has it now. */
export interface ClusterView {
  hosts: { list(): { name: string; state: 'online' | 'maintenance' | 'lost'; cpus: number; memoryBytes: number }[] };
  vms: {
    records(): {
      id: string;
      host: string;
      cpus: number;
      memoryBytes: number;
      antiAffinity: string | null;
      desired: 'running' | 'stopped';
    }[];
  };
}

/** Places a VM on the cluster as it is now (hosts with their liveness, every VM's reservation). */
export function placeIn(view: ClusterView, req: PlacementRequest, policy?: PlacementPolicy): PlacementDecision {
  const hosts: PlacementHost[] = view.hosts
    .list()
    .map((h) => ({ name: h.name, state: h.state, cpus: h.cpus, memoryBytes: h.memoryBytes }));
  const vms: PlacedVm[] = view.vms.records().map((v) => ({
    id: v.id,
    host: v.host,
    cpus: v.cpus,
    memoryBytes: v.memoryBytes,
    antiAffinity: v.antiAffinity ?? null,
    desired: v.desired,
  }));
  return place(req, hosts, vms, policy);
}
