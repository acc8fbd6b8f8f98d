/**
 * Starting a VM, step by step with an intent written before each (prepare, vdisk, taps, qemu,
 * qmp): a runner killed at any point leaves a note of exactly what may be half done, and every
 * resource is in vm.json before it exists, so the next runner can remove it.
 */
import { chmod, chown, mkdir, rename, unlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { FdError, isErrno } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { buildQemuArgv, type Accel, type NbdExport } from '../../qemu/argv.js';
import type { QmpClient } from '../../qemu/qmp.js';
import type { VmSpec } from '../../qemu/spec.js';
import { isRunning } from '../pidfile.js';
import { copyPrivate } from '../private-files.js';
import { launchQemu, qemuStderrTail } from '../qemu-process.js';
import {
  readRecord,
  vmDir,
  writeExit,
  writeIntent,
  writeRecord,
  type Intent,
  type VmDir,
  type VmRecord,
} from '../run-dir.js';
import { createTap, tapName } from '../tap.js';
import { startVdisk } from '../vdisk-process.js';
import type { RunAs } from './run-as.js';
import { teardown } from './teardown.js';
import { createVmCgroup, enterCgroupCommand, limitsFor, type CgroupKind } from '../confine/cgroups.js';
import { asVmUser, kvmAccess, prepareQemuFiles, tunOpenToAll } from '../confine/qemu-files.js';
import { claimVmUsers, type VmUserRange, type VmUsers } from '../confine/vm-users.js';
import { MiB } from '../../core/units.js';
import { OVMF_CODE, OVMF_VARS_TEMPLATE, type Attached, type VmEventType } from './types.js';

export interface Confinement {
  users: VmUserRange;
  cgroups: CgroupKind;
}

export interface StartContext {
  runDir: string;
  dataDir: string;
  log: Logger;
  faultPoint?: ((point: string) => void | Promise<void>) | undefined;
  accel(): Promise<Accel>;
  runAs(): RunAs | null;
  /** Per-VM users and cgroups (as root), or null. */
  confinement(): Confinement | null;
  attached(name: string): Attached | undefined;
  attach(d: VmDir, record: VmRecord, qmp: QmpClient, child?: ChildProcess): void;
  detach(att: Attached): Promise<void>;
  emit(vm: string, type: VmEventType, detail?: Record<string, unknown>): void;
}

export async function startVm(
  c: StartContext,
  spec: VmSpec,
  restarts: number,
  extraArgs: string[] = [],
): Promise<void> {
  const name = spec.name;
  if (c.attached(name)) throw new FdError('FD_VM_ALREADY_RUNNING', `VM ${name} is already running`, { status: 409 });
  const d = vmDir(c.runDir, name);
  const prev = await readRecord(d);
  if (prev?.qemu && isRunning(prev.qemu))
    throw new FdError('FD_VM_ALREADY_RUNNING', `VM ${name} has a QEMU running (pid ${prev.qemu.pid})`, {
      hint: 'another runner owns it, or call reattachAll() first',
      status: 409,
    });
  const accel = await c.accel();
  const confinement = c.confinement();
  const users = confinement
    ? await claimVmUsers(confinement.users, c.runDir, name, (runDir, other, slot) =>
        slotInUse(vmDir(runDir, other), slot),
      )
    : undefined;
  // Where only root may open /dev/kvm or /dev/net/tun (no udev rules), QEMU opens them first
  // and then drops to the VM's user by itself (-runas; the sandbox must then allow setuid).
  const kvm = users && accel === 'kvm' ? await kvmAccess() : undefined;
  const bridged = spec.nics.some((n) => n.network.kind === 'bridge');
  const needsRoot = users && (kvm === null || (bridged && !(await tunOpenToAll())));
  const runAs =
    users && needsRoot
      ? { user: `${users.qemuUid}:${users.sharedGid}`, uid: users.qemuUid, gid: users.sharedGid }
      : c.runAs();
  await prepareRunDir(d, users, runAs);
  await unlink(d.exit).catch((err: unknown) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });

  const record: VmRecord = {
    spec,
    accel,
    ...(runAs ? { runAs: runAs.user } : {}),
    ...(users ? { confine: users } : {}),
    vdiskExports: spec.disks
      .filter((x) => x.source.kind === 'vhd')
      .map((x) => ({
        diskId: x.id,
        image: x.source.path,
        socketPath: d.vdiskSocket(x.id),
        exportName: x.id,
        readOnly: x.readOnly,
      })),
    taps: spec.nics.flatMap((n) =>
      n.network.kind === 'bridge' ? [{ nicId: n.id, tap: tapName(spec.uuid, n.id), bridge: n.network.bridge }] : [],
    ),
    startedAt: new Date().toISOString(),
    restarts,
  };
  const t0 = Date.now();
  const step = async (s: Extract<Intent, { op: 'start' }>['step']): Promise<void> => {
    c.log.debug('start step', { vm: name, step: s, elapsedMs: Date.now() - t0 });
    await writeIntent(d, { op: 'start', step: s, at: new Date().toISOString() });
    await c.faultPoint?.(`start:${s}`);
  };
  let launched: Awaited<ReturnType<typeof launchQemu>> | undefined;
  try {
    await step('prepare');
    await writeRecord(d, record);

    await step('vdisk');
    if (record.vdiskExports.length) await startVmVdisk(d, record, runAs);

    await step('taps');
    for (const t of record.taps) await createTap(t.tap, t.bridge, users?.qemuUid);

    await step('qemu');
    const nbd: Record<string, NbdExport> = {};
    for (const v of record.vdiskExports) nbd[v.diskId] = { socketPath: v.socketPath, exportName: v.exportName };
    const taps = Object.fromEntries(record.taps.map((t) => [t.nicId, t.tap]));
    let uefi: { codePath: string; varsPath: string } | undefined;
    if (spec.firmware === 'uefi') uefi = { codePath: OVMF_CODE, varsPath: await uefiVars(c.dataDir, spec) };
    const files = users
      ? await prepareQemuFiles(spec, { qemuDir: d.qemuDir, users, ...(uefi ? { uefiVars: uefi.varsPath } : {}) })
      : undefined;
    const tcgCacheMiB = users && accel === 'tcg' ? TCG_CACHE_MIB : undefined;
    record.argv = buildQemuArgv(spec, {
      paths: d,
      accel,
      nbd,
      taps,
      ...(runAs ? { runAs: runAs.user } : {}),
      ...(uefi ? { uefi } : {}),
      ...(files ? { files: files.files, addFds: files.addFds } : {}),
      ...(tcgCacheMiB ? { tcgCacheMiB } : {}),
    });
    record.argv.push(...extraArgs);
    if (users && confinement) {
      const limits = limitsFor(spec.vcpus, spec.memoryBytes, (tcgCacheMiB ?? 0) * MiB);
      record.confine = { ...users, cgroup: await createVmCgroup(confinement.cgroups, String(users.qemuUid), limits) };
    }
    await writeRecord(d, record);
    const cgroup = record.confine?.cgroup;
    const asUser = users && !runAs ? asVmUser(users, typeof kvm === 'number' ? [kvm] : []) : [];
    launched = await launchQemu(record.argv, d, {
      ...(files ? { fds: files.childFds } : {}),
      ...(users ? { wrap: (cmd: string[]) => (cgroup ? enterCgroupCommand(cgroup, [...asUser, ...cmd]) : cmd) } : {}),
      onSpawn: async (proc) => {
        await files?.close(); // QEMU has its own copies now
        await c.faultPoint?.('start:qemu-spawned'); // pid not yet recorded: only the scan finds it
        record.qemu = proc;
        await writeRecord(d, record);
      },
    });

    await step('qmp');
    c.attach(d, record, launched.qmp, launched.child);
    await unlink(d.intent);
    c.log.info('vm started', { vm: name, pid: launched.proc.pid, accel });
    c.emit(name, 'started', { pid: launched.proc.pid, restarts });
  } catch (err) {
    const att = c.attached(name);
    if (att) await c.detach(att);
    else await launched?.qmp.close();
    const stderrTail = await qemuStderrTail(d.qemuLog);
    await teardown(d, record);
    await writeExit(d, { reason: 'start-failed', at: new Date().toISOString(), stderrTail });
    c.emit(name, 'start-failed', { message: (err as Error).message });
    if (err instanceof FdError) throw err;
    throw new FdError('FD_VM_START_FAILED', `VM ${name} did not start: ${(err as Error).message}`, { cause: err });
  }
}

/** Each UEFI VM keeps its own variable store in the data dir, copied from OVMF's template. */
export async function uefiVars(dataDir: string, spec: VmSpec): Promise<string> {
  const dir = join(dataDir, 'vms', spec.uuid);
  const path = join(dir, 'OVMF_VARS.fd');
  if (!existsSync(path)) {
    await mkdir(dir, { recursive: true });
    await copyPrivate(OVMF_VARS_TEMPLATE, `${path}.tmp`);
    await rename(`${path}.tmp`, path);
  }
  return path;
}

/** TCG translation cache of a confined QEMU: bounded, so its memory limit holds. */
export const TCG_CACHE_MIB = 256;

const uidGid = (u: VmUsers): { uid: number; gid: number } => ({ uid: u.qemuUid, gid: u.qemuUid });

/**
 * The run dir is root's (the runner's records, which QEMU must not change); QEMU's own q/ is
 * the only place its user may write. Confined: run dir root:SHARED 0710, q/ U:U 0770 (the
 * vdisk's user is in the VM's group U, to remove its sockets). -runas: q/ owned by that user.
 */
async function prepareRunDir(d: VmDir, users: VmUsers | undefined, runAs: RunAs | null): Promise<void> {
  await mkdir(d.qemuDir, { recursive: true });
  if (users) {
    await chown(d.dir, 0, users.sharedGid);
    await chmod(d.dir, 0o710);
    await chown(d.qemuDir, users.qemuUid, users.qemuUid);
    await chmod(d.qemuDir, 0o770);
  } else if (runAs) {
    await chmod(d.dir, 0o711);
    await chown(d.qemuDir, runAs.uid, runAs.gid);
    await chmod(d.qemuDir, 0o700);
  } else {
    await chmod(d.dir, 0o700);
    await chmod(d.qemuDir, 0o700);
  }
}

/** Whether the VM of another claim still runs (its record names the slot and a live process). */
async function slotInUse(d: VmDir, slot: number): Promise<boolean> {
  const rec = await readRecord(d).catch(() => undefined);
  if (rec?.confine?.slot !== slot) return false;
  return (!!rec.qemu && isRunning(rec.qemu)) || (!!rec.vdisk && isRunning(rec.vdisk));
}

/** Starts (or starts again) the vdisk process serving a VM's VHD disks; its identity goes in vm.json. */
export async function startVmVdisk(d: VmDir, record: VmRecord, runAs: RunAs | null): Promise<void> {
  const u = record.confine;
  await startVdisk({
    exports: record.vdiskExports.map(({ image, socketPath, exportName, readOnly }) => ({
      image,
      socketPath,
      exportName,
      readOnly,
    })),
    configPath: d.vdiskConfig,
    logPath: d.vdiskLog,
    ...(u ? { socketOwner: uidGid(u) } : runAs ? { socketOwner: { uid: runAs.uid, gid: runAs.gid } } : {}),
    // Its own user, in the VM's group (to remove its sockets from q/) and the shared one.
    ...(u ? { dropTo: { uid: u.vdiskUid, gid: u.qemuUid, groups: [u.sharedGid] } } : {}),
    onSpawn: async (proc) => {
      record.vdisk = proc;
      await writeRecord(d, record);
    },
  });
}
