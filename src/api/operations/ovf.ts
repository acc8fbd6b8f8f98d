/**
 * Appliances through the daemon: `ovf import` (an .ova or .ovf on the daemon's host becomes VMs)
 * and `ovf export` (stopped VMs become an .ova there). The local `ovf inspect` and `ovf
 * validate` work on files without a daemon (src/cli/commands/ovf.ts).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { Name } from '../../cluster/state/model.js';
import { exportDirs, importDirs } from '../../host/host-config.js';
import { checkExportTarget, checkImportSource, isInsideDir } from '../../host/import-paths.js';
import { planExport, runExport } from '../../appliance/export.js';
import { planImport, runImport, type ApplianceHost } from '../../appliance/import.js';
import { defineTaskOperation, type OpContext, type Route } from '../operation.js';

const applianceHost = ({ svc }: OpContext): ApplianceHost => ({
  store: svc.store,
  hostName: svc.hostName,
  vmsDir: svc.agent.vmsDir,
});

/** An export runs where the VMs' disks are: the owner of the first VM (all must share it). */
const ownerOfFirst = async (ctx: OpContext, input: { vms: string[] }): Promise<Route | undefined> => {
  const first = input.vms[0];
  if (!first) return undefined;
  try {
    return { host: (await ctx.svc.vms.find(first)).value.host };
  } catch {
    // A group name, or no such VM: planExport answers it where the call landed.
    return undefined;
  }
};

/**
 * Where a caller may import an appliance from: what was uploaded (appliance-upload.ts) for
 * anyone who may write; the host's import directories for an admin.
 */
async function applianceSources(ctx: OpContext, file: string): Promise<string[]> {
  const uploads = join(ctx.svc.dataDir, 'appliances', 'uploads');
  if (await isInsideDir(file, uploads)) return [uploads];
  if (ctx.role !== 'admin')
    throw new FdError('FD_FORBIDDEN', `token "${ctx.caller}" (${ctx.role}) may not import host files`, {
      hint: 'upload the .ova (POST /api/v1/appliances/upload), or use an admin token',
    });
  return importDirs(ctx.svc.dataDir);
}

export const ovfOperations = [
  defineTaskOperation({
    name: 'ovf.import',
    summary: 'import an OVF appliance (.ova, or .ovf with its files) as VMs: one per virtual system',
    http: { method: 'POST', path: '/appliances/actions/import' },
    input: z.strictObject({
      file: z
        .string()
        .min(1)
        .max(4096)
        .describe(
          "absolute path of the .ova or .ovf on the daemon's host: an upload, or (admin) in DATA_DIR/import or importDirs",
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
    // Uploads for anyone who may write; any other host file is the administrator's call.
    permission: 'write',
    cli: {
      noun: 'ovf',
      verb: 'import',
      args: ['file'],
      flags: { prop: { value: 'KEY=VALUE' }, name: { value: 'PREFIX' }, deployment: { value: 'OPTION' } },
    },
    run: async (ctx, input) => {
      const host = applianceHost(ctx);
      const allowed = async (): Promise<string> =>
        checkImportSource(input.file, await applianceSources(ctx, input.file), { notFound: 'FD_OVF_NOT_FOUND' });
      await allowed();
      const plan = await planImport(host, {
        file: input.file,
        name: input.name,
        acceptEula: input.acceptEula,
        props: input.prop,
        deployment: input.deployment,
      });
      const label = plan.group?.name ?? plan.vms.map((v) => v.name).join(', ');
      return {
        title: `import appliance ${label}`,
        target: { kind: plan.group ? 'group' : 'vm', id: plan.group?.name ?? plan.vms[0]?.id ?? label, name: label },
        // Checked again when the work starts: the file may have been replaced meanwhile.
        work: async (t) => {
          await allowed();
          return runImport(host, plan, t);
        },
      };
    },
  }),
  defineTaskOperation({
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
    permission: 'write',
    cli: {
      noun: 'ovf',
      verb: 'export',
      args: ['vms'],
      flags: { out: { value: 'FILE.ova' }, ovfVersion: { value: '1|2' } },
    },
    route: ownerOfFirst,
    run: async (ctx, input) => {
      const host = applianceHost(ctx);
      const out = await checkExportTarget(input.out, await exportDirs(ctx.svc.dataDir));
      const plan = await planExport(host, ctx.svc.vms, {
        refs: input.vms,
        out,
        ovfVersion: input.ovfVersion,
        diskFormat: input.diskFormat,
      });
      const label = plan.vms.map((v) => v.name).join(', ');
      return {
        title: `export ${label} to ${input.out}`,
        target:
          plan.vms.length === 1
            ? { kind: 'vm', id: plan.vms[0]!.id, name: plan.vms[0]!.name }
            : { kind: 'group', id: plan.group?.name ?? label, name: label },
        work: (t) =>
          ctx.svc.agent.exclusive(
            plan.vms.map((v) => v.id),
            () => runExport(host, ctx.svc.vms, plan, t),
          ),
      };
    },
  }),
];
