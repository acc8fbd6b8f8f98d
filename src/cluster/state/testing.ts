/**
 * For unit tests of the cluster's logic: a State over a MemoryStore, and records to seed it
 * with. Everything here is real code but the store, which is the in-memory twin that
 * kv.test.ts holds to etcd's behaviour.
 */
import { silentLogger } from '../../core/log.js';
import { keys } from './keys.js';
import { MemoryStore } from './memory-store.js';
import type { DiskRecord, HostRecord, VmRecord } from './model.js';
import { State } from './state.js';

export async function memoryState(): Promise<{ store: MemoryStore; state: State }> {
  const store = new MemoryStore();
  return { store, state: await State.open(store, silentLogger) };
}

let n = 0;
const uuid = (): string => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;

export function vmRecord(over: Partial<VmRecord> = {}): VmRecord {
  const now = new Date().toISOString();
  const id = over.id ?? uuid();
  return {
    id,
    name: `vm${n}`,
    cpus: 1,
    memoryBytes: 128 * 1024 * 1024,
    machine: 'q35',
    firmware: 'bios',
    boot: ['disk'],
    kernelImage: null,
    disks: [],
    cdroms: [],
    nics: [],
    restartPolicy: 'never',
    antiAffinity: null,
    desired: 'stopped',
    ha: null,
    host: 'h1',
    image: null,
    createdAt: now,
    updatedAt: now,
    ...over,
  };
}

export function diskRecord(vmId: string, over: Partial<DiskRecord> = {}): DiskRecord {
  return {
    id: uuid(),
    name: `disk${n}`,
    pool: 'default',
    path: `/nonexistent/${vmId}/disk0.vhd`,
    format: 'vhd',
    sizeBytes: 64 * 1024 * 1024,
    baseImage: null,
    vmId,
    host: 'h1',
    createdAt: new Date().toISOString(),
    ...over,
  };
}

export function hostRecord(name: string, over: Partial<HostRecord> = {}): HostRecord {
  return {
    name,
    apiUrl: `http://127.0.0.1:1/${name}`,
    state: 'online',
    cpus: 4,
    memoryBytes: 8 * 1024 ** 3,
    freeMemoryBytes: 4 * 1024 ** 3,
    accel: 'tcg',
    version: 'test',
    startedAt: new Date().toISOString(),
    ...over,
  };
}

/** Hosts with their records, the live ones with their liveness key. */
export async function seedHosts(store: MemoryStore, hosts: { name: string; alive: boolean }[]): Promise<void> {
  for (const h of hosts) {
    await store.put(keys.host(h.name), hostRecord(h.name));
    if (h.alive) await store.put(keys.alive(h.name), { name: h.name });
  }
}

/** The host `name` loses its liveness key (its lease ran out). */
export async function loseHost(store: MemoryStore, name: string): Promise<void> {
  await store.remove(keys.alive(name));
}
