/** What operations can reach: the cluster-level services of the daemon that answers. */
import type { Logger } from '../core/log.js';
import type { Store } from '../cluster/state/store.js';
import type { TaskManager } from '../cluster/state/tasks.js';
import type { TokenService } from '../cluster/state/tokens.js';
import type { VmService } from '../cluster/state/vms.js';
import type { HostAgent } from '../cluster/agent/host-agent.js';
import type { Catalog } from '../cluster/state/catalog.js';
import type { LeaderElection } from '../cluster/clustering/leader.js';
import type { MetricsHistory } from './metrics-history.js';
import type { AuditLog } from '../cluster/state/audit.js';

export interface Services {
  hostName: string;
  dataDir: string;
  /** Port the API listens on (known once it listens). */
  apiPort: number;
  version: string;
  store: Store;
  tasks: TaskManager;
  tokens: TokenService;
  vms: VmService;
  catalog: Catalog;
  agent: HostAgent;
  leader: LeaderElection;
  /** The last hour of this host's and its VMs' load (the web UI's graphs). */
  history: MetricsHistory;
  /** Who changed what (audit-hook.ts records every changing call). */
  audit: AuditLog;
  log: Logger;
}
