/** What operations can reach: the cluster-level services of the daemon that answers. */
import type { Logger } from '../core/log.js';
import type { HostAgent } from '../cluster/agent/host-agent.js';
import type { LeaderElection } from '../cluster/clustering/leader.js';
import type { PeerClient } from '../cluster/peer/client.js';
import type { Provisioner } from '../cluster/provisioning/provisioner.js';
import type { Runtime } from '../cluster/runtime/runtime.js';
import type { Catalog } from '../cluster/state/catalog.js';
import type { HostRepo } from '../cluster/state/hosts.js';
import type { Store } from '../cluster/state/store.js';
import type { State } from '../cluster/state/state.js';
import type { TaskManager } from '../cluster/state/tasks.js';
import type { TokenService } from '../cluster/state/tokens.js';
import type { VmRepo } from '../cluster/state/vms.js';
import type { MetricsHistory } from './metrics-history.js';
import type { AuditLog } from '../cluster/state/audit.js';

export interface Services {
  hostName: string;
  dataDir: string;
  /** Port the API listens on (known once it listens). */
  apiPort: number;
  version: string;
  /** The etcd store (writes; its client for membership and elections). */
  store: Store;
  state: State;
  /** Shorthands for state.vms, state.hosts and state.catalog. */
  vms: VmRepo;
  hosts: HostRepo;
  catalog: Catalog;
  tasks: TaskManager;
  tokens: TokenService;
  agent: HostAgent;
  provisioner: Provisioner;
  runtime: Runtime;
  peers: PeerClient;
  leader: LeaderElection;
  /** The last hour of this host's and its VMs' load (the web UI's graphs). */
  history: MetricsHistory;
  /** Who changed what (audit-hook.ts records every changing call). */
  audit: AuditLog;
  log: Logger;
}
