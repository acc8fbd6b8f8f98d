/**
 * The internal operations hosts call on each other: the target's steps of a live migration and
 * the standby's steps of VM mirroring and failover. They are contracts like the public ones,
 * under /internal, left out of the public OpenAPI document and the CLI; the peer client calls
 * them by contract, never by a hand-written path.
 */
import { z } from 'zod';
import { internalOperation } from '../../core/contract.js';
import { Name } from '../state/model.js';

const VmId = z.object({ id: z.uuid() });
const DiskPlan = z.strictObject({ id: z.string(), sizeBytes: z.number().int(), baseImage: z.string().nullable() });
const DiskPaths = z.record(z.string(), z.string());
const TcpAddress = z.object({ host: z.string(), port: z.number().int() });

export const migrationPrepare = internalOperation({
  name: 'vm.migration.prepare',
  summary: 'the target host of a migration prepares disks and an incoming QEMU',
  http: { method: 'POST', path: '/internal/vms/:id/migration/prepare' },
  input: z.strictObject({
    id: z.uuid(),
    source: Name,
    disks: z.array(DiskPlan).max(64),
    multifd: z.boolean().optional(),
    postcopy: z.boolean().optional(),
  }),
  output: z.object({
    nbd: TcpAddress,
    disks: z.array(z.object({ id: z.string(), exportName: z.string(), sync: z.enum(['top', 'full']) })),
    migrateUri: z.string(),
    diskPaths: DiskPaths,
  }),
  permission: 'admin',
  errors: ['FD_MIGRATION_SAME_HOST', 'FD_MIGRATION_BUSY', 'FD_VM_NOT_FOUND'],
});

export const migrationFinish = internalOperation({
  name: 'vm.migration.finish',
  summary: 'the target host of a migration runs the guest',
  http: { method: 'POST', path: '/internal/vms/:id/migration/finish' },
  input: VmId,
  output: z.object({ pid: z.number().int().nullable(), loadWaitMs: z.number() }),
  permission: 'admin',
  errors: ['FD_MIGRATION_FAILED'],
});

export const migrationState = internalOperation({
  name: 'vm.migration.state',
  summary: 'whether the target of a migration runs the guest (recovery after a restart)',
  http: { method: 'POST', path: '/internal/vms/:id/migration/state' },
  input: VmId,
  output: z.object({ qemuStatus: z.string().nullable(), diskPaths: DiskPaths }),
  permission: 'admin',
});

export const migrationAbort = internalOperation({
  name: 'vm.migration.abort',
  summary: 'the target host of a failed migration removes what it prepared',
  http: { method: 'POST', path: '/internal/vms/:id/migration/abort' },
  input: VmId,
  output: z.object({ aborted: z.literal(true) }),
  permission: 'admin',
  errors: ['FD_MIGRATION_OWNED', 'FD_MIGRATION_TARGET_RAN'],
});

export const StandbyMirrorSchema = z.object({
  host: z.string(),
  disks: z.array(
    z.object({
      id: z.string(),
      port: z.number().int(),
      exportName: z.string(),
      sync: z.enum(['top', 'full']),
      path: z.string(),
    }),
  ),
});

export const protectionPrepare = internalOperation({
  name: 'vm.protection.prepare',
  summary: 'a standby host serves fresh copies of a VM disks for its primary to mirror into',
  http: { method: 'POST', path: '/internal/vms/:id/protection/prepare' },
  input: z.strictObject({ id: z.uuid(), primary: Name, disks: z.array(DiskPlan).max(64) }),
  output: StandbyMirrorSchema,
  permission: 'admin',
  errors: ['FD_PROTECT_SAME_HOST', 'FD_VM_NOT_FOUND'],
});

export const protectionRelease = internalOperation({
  name: 'vm.protection.release',
  summary: 'a standby host drops its copy of a VM',
  http: { method: 'POST', path: '/internal/vms/:id/protection/release' },
  input: VmId,
  output: z.object({ released: z.boolean() }),
  permission: 'admin',
});

export const protectionTakeover = internalOperation({
  name: 'vm.protection.takeover',
  summary: 'the standby of a lost host fences its copy and runs the VM from it',
  http: { method: 'POST', path: '/internal/vms/:id/protection/takeover' },
  input: z.strictObject({ id: z.uuid(), from: Name }),
  output: z.object({ host: z.string(), state: z.string() }),
  permission: 'admin',
  errors: ['FD_TAKEOVER_STALE', 'FD_NO_STANDBY_COPY', 'FD_STANDBY_COPY_STALE', 'FD_VM_NOT_FOUND'],
});

export const protectionHandover = internalOperation({
  name: 'vm.protection.handover',
  summary: 'planned failover: the standby starts an incoming QEMU on its copy',
  http: { method: 'POST', path: '/internal/vms/:id/protection/handover' },
  input: z.strictObject({ id: z.uuid(), from: Name }),
  output: z.object({ migrateUri: z.string(), diskPaths: DiskPaths }),
  permission: 'admin',
  errors: ['FD_TAKEOVER_STALE', 'FD_NO_STANDBY_COPY'],
});

export const protectionHandoverFinish = internalOperation({
  name: 'vm.protection.handover-finish',
  summary: 'planned failover: the standby runs the guest',
  http: { method: 'POST', path: '/internal/vms/:id/protection/handover-finish' },
  input: VmId,
  output: z.object({ pid: z.number().int().nullable() }),
  permission: 'admin',
  errors: ['FD_FAILOVER_FAILED'],
});

export const internalContracts = [
  migrationPrepare,
  migrationFinish,
  migrationState,
  migrationAbort,
  protectionPrepare,
  protectionRelease,
  protectionTakeover,
  protectionHandover,
  protectionHandoverFinish,
];
