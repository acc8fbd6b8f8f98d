/**
 * The records of the desired state, as zod schemas: what a VM, a disk, an image and a network
 * are at the platform level. The API validates input with these; the host agent compiles a
 * VM record into the QEMU-level spec (src/qemu/spec.ts) where paths and sockets are known.
 */
import { z } from 'zod';
import { NAME_RE } from '../../core/ids.js';
import { parseSize } from '../../core/units.js';

export const Name = z
  .string()
  .regex(NAME_RE, 'use 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit');

/** A size in bytes, or a human size like "256M" (parsed once here, at the edge). */
export const Size = z.union([z.number().int().nonnegative(), z.string().max(32)]).transform((v, ctx) => {
  try {
    return parseSize(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (write 256M, 2G or bytes)` });
    return z.NEVER;
  }
});

export const MIN_MEMORY_BYTES = 32 * 1024 * 1024;

export const PowerState = z.enum(['running', 'stopped']);
export const RestartPolicy = z.enum(['never', 'on-failure', 'always']);
export const Mac = z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i, 'a MAC like 52:54:00:12:34:56');

export const VmNic = z.strictObject({
  id: z.string(),
  mac: Mac,
  network: Name,
  /** Fixed address on a cluster (VXLAN) network: the same on every host the VM runs on. */
  ip: z.string().nullable().default(null),
});
export const VmDiskRef = z.strictObject({ id: z.string(), diskId: z.string() });
export const VmCdrom = z.strictObject({
  id: z.string(),
  image: Name.nullable(),
  path: z.string().nullable(),
  /** sata for installers; scsi (virtio-scsi) for seed ISOs, which every cloud image reads. */
  bus: z.enum(['sata', 'scsi']).default('sata'),
});

/** High availability: restart after a crash here, or on another host after this one is lost. */
export const HaPolicy = z.strictObject({
  enabled: z.boolean(),
  /** Higher first when several VMs come back at once. */
  priority: z.number().int().min(0).max(1000).default(0),
  /** Crash restarts within 10 minutes before the VM is left stopped and reported. */
  maxRestarts: z.number().int().min(0).max(100).default(3),
});
export type HaPolicy = z.infer<typeof HaPolicy>;

export const VmRecord = z.strictObject({
  id: z.uuid(),
  name: Name,
  cpus: z.number().int().min(1).max(64),
  memoryBytes: z.number().int().min(MIN_MEMORY_BYTES),
  machine: z.enum(['q35', 'pc']),
  firmware: z.enum(['bios', 'uefi']),
  boot: z.array(z.enum(['disk', 'cdrom', 'network'])),
  /** Direct kernel boot, from an image that ships a kernel (the tiny image). */
  kernelImage: Name.nullable(),
  disks: z.array(VmDiskRef),
  cdroms: z.array(VmCdrom),
  nics: z.array(VmNic),
  restartPolicy: RestartPolicy,
  /** VMs of one group never share a host (placement keeps them apart). */
  antiAffinity: Name.nullable().default(null),
  desired: PowerState,
  ha: HaPolicy.nullable().default(null),
  /** Host that should run this VM (ownership; moves only by transaction). */
  host: z.string(),
  image: Name.nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type VmRecord = z.infer<typeof VmRecord>;

export const VmActualState = z.enum(['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed', 'unknown']);
export type VmActualState = z.infer<typeof VmActualState>;

/** Written by the host that runs the VM; what is, as opposed to what should be. */
export const VmStatus = z.object({
  id: z.string(),
  host: z.string(),
  state: VmActualState,
  pid: z.number().int().nullable(),
  since: z.string(),
  lastError: z.string().nullable(),
  restarts: z.number().int().default(0),
});
export type VmStatus = z.infer<typeof VmStatus>;

export const DiskRecord = z.strictObject({
  id: z.string(),
  name: Name,
  pool: Name,
  path: z.string(),
  format: z.enum(['vhd', 'raw', 'qcow2']),
  sizeBytes: z.number().int(),
  /** Base image this disk is a differencing child of. */
  baseImage: Name.nullable(),
  vmId: z.string().nullable(),
  host: z.string(),
  createdAt: z.string(),
});
export type DiskRecord = z.infer<typeof DiskRecord>;

export const ImageRecord = z.strictObject({
  name: Name,
  kind: z.enum(['disk', 'iso']),
  path: z.string(),
  format: z.enum(['vhd', 'raw', 'iso']),
  sizeBytes: z.number().int(),
  kernel: z.string().nullable(),
  initrd: z.string().nullable(),
  cmdline: z.string().nullable(),
  host: z.string(),
  createdAt: z.string(),
});
export type ImageRecord = z.infer<typeof ImageRecord>;

export const NetworkRecord = z.strictObject({
  name: Name,
  /** nat: a bridge per host; vxlan: one L2 segment across all hosts; user: QEMU's slirp. */
  kind: z.enum(['nat', 'user', 'vxlan']),
  bridge: z.string().nullable(),
  cidr: z.string().nullable(),
  vni: z.number().int().min(1).max(16777215).nullable().default(null),
  createdAt: z.string(),
});
export type NetworkRecord = z.infer<typeof NetworkRecord>;

export const HostState = z.enum(['online', 'maintenance', 'lost']);

export const HostRecord = z.object({
  name: z.string(),
  apiUrl: z.string(),
  /** online or maintenance as the host set it; 'lost' only in views, from its liveness key. */
  state: HostState,
  cpus: z.number().int(),
  memoryBytes: z.number(),
  freeMemoryBytes: z.number(),
  accel: z.string(),
  version: z.string(),
  startedAt: z.string(),
  /** PEM of the host's self-signed API certificate, so other hosts can relay calls to it. */
  certPem: z.string().optional(),
});
export type HostRecord = z.infer<typeof HostRecord>;

/** alive/NAME: bound to the lease the host's fence keeper renews; gone = the host is lost. */
export const AliveRecord = z.object({ name: z.string() }).loose();

export const ProtectionState = z.enum(['syncing', 'protected', 'degraded']);
export type ProtectionState = z.infer<typeof ProtectionState>;

/**
 * VM mirroring (protection/ID): a synchronous copy of the VM's disks on a standby host. The
 * primary (the VM's host) writes it as the mirror's state changes; the leader reads it to
 * decide whether a lost primary's VM can start on the standby without losing a write: only a
 * `protected` record with a live standby qualifies.
 */
export const ProtectionRecord = z.object({
  vmId: z.string(),
  /** The standby the user asked for, or null: any host with room. */
  requestedStandby: z.string().nullable(),
  /** Host running the VM when this was written. */
  primary: z.string(),
  standby: z.string().nullable(),
  state: ProtectionState,
  /** Bytes copied of the initial sync. */
  progress: z.object({ done: z.number(), total: z.number() }).nullable(),
  lastError: z.string().nullable(),
  /** When the state last changed. */
  since: z.string(),
  updatedAt: z.string(),
});
export type ProtectionRecord = z.infer<typeof ProtectionRecord>;

/** What a standby serves for a mirror (its vdisk on TCP) and where its copies live. */
export interface StandbyMirror {
  host: string;
  disks: { id: string; port: number; exportName: string; sync: 'top' | 'full'; path: string }[];
}

/** A migration in flight (migrations/ID), recorded by its source so a restarted daemon can finish or undo it. */
export const MigrationIntent = z.object({
  vmId: z.string(),
  from: z.string(),
  to: z.string(),
  /**
   * copying: disks and memory moving; finishing: the target was told to run the guest;
   * aborting: the migration failed, the source runs the guest, the target still has to
   * remove its side (it could not be reached).
   */
  phase: z.enum(['copying', 'finishing', 'aborting']),
  at: z.string(),
});
export type MigrationIntent = z.infer<typeof MigrationIntent>;
