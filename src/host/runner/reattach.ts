/**
 * A new runner meets a VM's run dir: it reattaches to a live QEMU, completes or rolls back a step
 * that a killed runner left half done (intent.json), or records a death that happened while no
 * runner watched.
 */
import { unlink } from 'node:fs/promises';
import type { Logger } from '../../core/log.js';
import { QmpClient } from '../../qemu/qmp.js';
import { isRunning } from '../pidfile.js';
import { qemuStderrTail } from '../qemu-process.js';
import { readIntent, readRecord, vmDir, writeExit, type ExitRecord, type VmDir, type VmRecord } from '../run-dir.js';
import { teardown } from './teardown.js';
import type { ReattachResult, VmEventType } from './types.js';

export interface ReattachContext {
  runDir: string;
  log: Logger;
  attach(d: VmDir, record: VmRecord, qmp: QmpClient): void;
  emit(vm: string, type: VmEventType, detail?: Record<string, unknown>): void;
  restartAfterCrash(record: VmRecord): void;
}

export async function reattachOne(c: ReattachContext, name: string): Promise<ReattachResult['outcome']> {
  const d = vmDir(c.runDir, name);
  const [record, intent] = await Promise.all([readRecord(d), readIntent(d)]);
  const alive = record?.qemu !== undefined && isRunning(record.qemu);

  if (intent?.op === 'start') {
    if (record && alive && intent.step === 'qmp') {
      const qmp = await QmpClient.connect(d.qmp).catch(() => undefined);
      if (qmp) {
        c.attach(d, record, qmp);
        await unlink(d.intent);
        c.emit(name, 'repaired', { outcome: 'start-adopted', pid: record.qemu!.pid });
        return 'start-adopted';
      }
    }
    await teardown(d, record);
    await writeExit(d, {
      reason: 'start-interrupted',
      at: new Date().toISOString(),
      stderrTail: await qemuStderrTail(d.qemuLog),
      noticedLate: true,
    });
    c.emit(name, 'repaired', { outcome: 'start-rolled-back', step: intent.step });
    return 'start-rolled-back';
  }
  if (intent?.op === 'stop') {
    await teardown(d, record);
    await writeExit(d, {
      reason: intent.reason,
      at: new Date().toISOString(),
      ...(record?.qemu ? { pid: record.qemu.pid } : {}),
      stderrTail: await qemuStderrTail(d.qemuLog),
      noticedLate: true,
    });
    c.emit(name, 'repaired', { outcome: 'stop-completed' });
    return 'stop-completed';
  }
  if (!record) return 'stopped';
  if (alive) {
    try {
      const qmp = await QmpClient.connect(d.qmp, { timeoutMs: 5000 });
      c.attach(d, record, qmp);
      c.emit(name, 'reattached', { pid: record.qemu!.pid });
      // a vdisk that died while we were away is revived by the monitor's next poll
      return 'attached';
    } catch (err) {
      // QEMU alive but its QMP is not: treat as crashed rather than leave an unmanageable VM
      c.log.warn('live QEMU without QMP; stopping it', { vm: name, err: (err as Error).message });
    }
  }
  const exit: ExitRecord = {
    reason: 'crashed',
    at: new Date().toISOString(),
    ...(record.qemu ? { pid: record.qemu.pid } : {}),
    stderrTail: await qemuStderrTail(d.qemuLog),
    noticedLate: true,
  };
  await teardown(d, record);
  await writeExit(d, exit);
  c.emit(name, 'died-while-away', { ...exit });
  c.restartAfterCrash(record);
  return 'died-while-away';
}
