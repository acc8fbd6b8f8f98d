/** Handlers of appliance import and export (contracts/ovf.ts). */
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import { exportDirs, importDirs } from '../../host/host-config.js';
import { checkExportTarget, checkImportSource, isInsideDir } from '../../host/import-paths.js';
import { planExport, runExport } from '../../appliance/export.js';
import { planImport, runImport, type ApplianceHost } from '../../appliance/import.js';
import { ovfExport, ovfImport } from '../contracts/ovf.js';
import { handleTask, type Binding, type OpContext } from '../handler.js';

const applianceHost = ({ svc }: OpContext): ApplianceHost => ({
  store: svc.store,
  state: svc.state,
  hostName: svc.hostName,
  vmsDir: svc.provisioner.disks.vmsDir,
});

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

export const ovfHandlers: Binding[] = [
  handleTask(ovfImport, async (ctx, input) => {
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
  }),
  handleTask(ovfExport, async (ctx, input) => {
    const host = applianceHost(ctx);
    const out = await checkExportTarget(input.out, await exportDirs(ctx.svc.dataDir));
    const plan = await planExport(host, {
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
          () => runExport(host, plan, t),
        ),
    };
  }),
];
