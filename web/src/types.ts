// What the public API answers, as far as the UI reads it (see /api/v1/openapi.json).
export type VmState = 'stopped' | 'starting' | 'running' | 'paused' | 'stopping' | 'crashed' | 'unknown';

export interface Protection {
  state: 'syncing' | 'protected' | 'degraded';
  primary: string;
  standby: string | null;
  requestedStandby: string | null;
  since: string;
  lastError: string | null;
  progress: { done: number; total: number } | null;
}

export interface Vm {
  id: string;
  name: string;
  cpus: number;
  memoryBytes: number;
  machine: string;
  firmware: string;
  boot: string[];
  disks: { id: string; diskId: string }[];
  cdroms: { id: string; image: string | null; path: string | null; bus: string }[];
  nics: { id: string; mac: string; network: string; ip: string | null }[];
  restartPolicy: string;
  antiAffinity: string | null;
  desired: 'running' | 'stopped';
  ha: { enabled: boolean; priority: number; maxRestarts: number } | null;
  host: string;
  image: string | null;
  createdAt: string;
  updatedAt: string;
  state: VmState;
  pid: number | null;
  lastError: string | null;
  restarts: number;
  since: string | null;
  protection: Protection | null;
}

export interface Host {
  name: string;
  apiUrl: string;
  state: 'online' | 'maintenance' | 'lost';
  cpus: number;
  memoryBytes: number;
  freeMemoryBytes: number;
  accel: string;
  version: string;
  startedAt: string;
  leader: boolean;
}

export interface Progress {
  done: number;
  total: number;
  unit: 'bytes' | 'items';
  ratePerS: number;
  etaS: number | null;
  message?: string;
}

export interface Task {
  id: string;
  operation: string;
  title: string;
  target: { kind: string; id: string; name: string } | null;
  host: string;
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  progress: Progress | null;
  log: { t: string; msg: string }[];
  result: unknown;
  error: { code: string; message: string; hint?: string } | null;
  cancelRequested: boolean;
  createdAt: string;
  finishedAt: string | null;
}

export interface Session {
  token: { id: string; name: string; role: 'admin' | 'operator' | 'viewer' };
  permissions: ('read' | 'write' | 'admin')[];
  host: string;
  version: string;
}

export interface Image {
  name: string;
  kind: 'disk' | 'iso';
  format: string;
  sizeBytes: number;
  host: string;
}

export interface Network {
  name: string;
  kind: string;
  cidr: string | null;
}

export interface VmSample {
  t: number;
  cpuPercent: number | null;
  memoryRssBytes: number | null;
  memoryBytes: number | null;
  diskReadBps: number | null;
  diskWriteBps: number | null;
  netRxBps: number | null;
  netTxBps: number | null;
}
