/** Contracts of appliances through the daemon: ovf import and ovf export. */
import { z } from 'zod';
import { taskOperation } from '../../core/contract.js';
import { Name } from '../../cluster/state/model.js';
import { Loose } from './common.js';

export const ovfImport = taskOperation({
  name: 'ovf.import',
  summary: 'import an OVF appliance (.ova, or .ovf with its files) as VMs: one per virtual system',
  http: { method: 'POST', path: '/appliances/actions/import' },
  input: z.strictObject({
    file: z
      .string()
      .min(1)
      .max(4096)
      .describe(
        "absolute path of the .ova or .ovf on the daemon's host, in DATA_DIR/import or a configured importDirs",
      ),
    name: Name.optional().describe('VM name (prefix of the VM names and the group name for a collection)'),
    // A plain boolean makes a bare --accept-eula flag on the CLI.
    acceptEula: z.boolean().default(false).describe("accept the appliance's license agreement(s)"),
    // An array (not string-or-array): the CLI makes a repeatable --prop only from an array.
    prop: z
      .array(z.string().max(8192))
      .max(1000)
      .default([])
      .describe('KEY=VALUE for a ProductSection property (repeat for more)'),
    deployment: z.string().min(1).max(256).optional().describe('deployment option (DeploymentOptionSection)'),
  }),
  output: Loose,
  // Uploads for anyone who may write; any other host file is the administrator's call.
  permission: 'write',
  errors: ['FD_OVF_NOT_FOUND', 'FD_OVF_EULA_NOT_ACCEPTED', 'FD_DISK_EXTERNAL_REFERENCE', 'FD_FORBIDDEN'],
  cli: {
    noun: 'ovf',
    verb: 'import',
    args: ['file'],
    flags: { prop: { value: 'KEY=VALUE' }, name: { value: 'PREFIX' }, deployment: { value: 'OPTION' } },
  },
});

export const ovfExport = taskOperation({
  name: 'ovf.export',
  summary: 'export stopped VMs (or an imported group) as an OVA: OVF descriptor, SHA256 manifest, VMDK disks',
  http: { method: 'POST', path: '/appliances/actions/export' },
  input: z.strictObject({
    vms: z
      .union([z.string().min(1).max(64), z.array(z.string().min(1).max(64)).min(1).max(64)])
      .transform((v) => (typeof v === 'string' ? [v] : v))
      .describe('VM names or ids, or a group name'),
    out: z
      .string()
      .min(1)
      .max(4096)
      .describe(
        "absolute path of the .ova to write on the daemon's host, in DATA_DIR/export or a configured exportDirs",
      ),
    ovfVersion: z
      .union([z.literal(1), z.literal(2), z.enum(['1', '2'])])
      .default(1)
      .transform((v) => (Number(v) === 2 ? 2 : 1) as 1 | 2)
      .describe('OVF version of the descriptor: 1 (widest accepted) or 2'),
    diskFormat: z.enum(['vmdk', 'vhd']).default('vmdk').describe('disk files: streamOptimized VMDK or dynamic VHD'),
  }),
  output: Loose,
  permission: 'write',
  // An export runs where the VMs' disks are: the owner of the first VM (all must share it).
  route: { to: 'first-owner', field: 'vms' },
  cli: {
    noun: 'ovf',
    verb: 'export',
    args: ['vms'],
    flags: { out: { value: 'FILE.ova' }, ovfVersion: { value: '1|2' } },
  },
});

export const ovfContracts = [ovfImport, ovfExport];
