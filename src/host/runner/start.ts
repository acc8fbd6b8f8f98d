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
import { OVMF_CODE, OVMF_VARS_TEMPLATE, type Attached, type VmEventType } from './types.js';

export interface StartContext {
  runDir: string;
  dataDir: string;
  log: Logger;
  faultPoint?: ((point: string) => void | Promise<void>) | undefined;
  accel(): Promise<Accel>;
  runAs(): RunAs | null;
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
  const runAs = c.runAs();
  await mkdir(d.dir, { recursive: true });
  // Private to the VM: QEMU after its drop reconnects to the vdisk sockets and writes here.
  if (runAs) await chown(d.dir, runAs.uid, runAs.gid);
  await chmod(d.dir, 0o700);
  await unlink(d.exit).catch((err: unknown) => {
    if (!isErrno(err, 'ENOENT')) throw err;
  });

  const record: VmRecord = {
    spec,
    accel,
    ...(runAs ? { runAs: runAs.user } : {}),
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
    for (const t of record.taps) await createTap(t.tap, t.bridge);

    await step('qemu');
    const nbd: Record<string, NbdExport> = {};
    for (const v of record.vdiskExports) nbd[v.diskId] = { socketPath: v.socketPath, exportName: v.exportName };
    const taps = Object.fromEntries(record.taps.map((t) => [t.nicId, t.tap]));
    let uefi: { codePath: string; varsPath: string } | undefined;
    if (spec.firmware === 'uefi') uefi = { codePath: OVMF_CODE, varsPath: await uefiVars(c.dataDir, spec) };
    record.argv = buildQemuArgv(spec, {
      paths: d,
      accel,
      nbd,
      taps,
      ...(runAs ? { runAs: runAs.user } : {}),
      ...(uefi ? { uefi } : {}),
    });
    record.argv.push(...extraArgs);
    await writeRecord(d, record);
    launched = await launchQemu(record.argv, d, {
      onSpawn: async (proc) => {
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

/** Starts (or starts again) the vdisk process serving a VM's VHD disks; its identity goes in vm.json. */
export async function startVmVdisk(d: VmDir, record: VmRecord, runAs: RunAs | null): Promise<void> {
  await startVdisk({
    exports: record.vdiskExports.map(({ image, socketPath, exportName, readOnly }) => ({
      image,
      socketPath,
      exportName,
      readOnly,
    })),
    configPath: d.vdiskConfig,
    logPath: d.vdiskLog,
    ...(runAs ? { socketOwner: { uid: runAs.uid, gid: runAs.gid } } : {}),
    onSpawn: async (proc) => {
      record.vdisk = proc;
      await writeRecord(d, record);
    },
  });
}
