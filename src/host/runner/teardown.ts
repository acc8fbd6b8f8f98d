/** Ending a VM's processes and recording how it ended. */
import { readFile } from 'node:fs/promises';
import { isRunning, signalIdentity, terminate, waitGone } from '../pidfile.js';
import { findProcessesMentioning } from '../proc-scan.js';
import { qemuStderrTail } from '../qemu-process.js';
import { clearRuntime, type ExitReason, type ExitRecord, type VmDir, type VmRecord } from '../run-dir.js';
import { deleteTap } from '../tap.js';
import { stopVdisk } from '../vdisk-process.js';
import type { Attached } from './types.js';

/** Stops everything a VM may have left (QEMU, vdisks, taps, sockets), found by record and by scan. */
export async function teardown(d: VmDir, record: VmRecord | undefined): Promise<void> {
  if (record?.qemu && isRunning(record.qemu)) {
    signalIdentity(record.qemu, 'SIGKILL');
    await waitGone(record.qemu, 5000);
  }
  // orphans a killed runner never recorded: QEMU first (it holds the vdisk connections)
  for (const p of await findProcessesMentioning(d.dir + '/')) {
    const cmd = await readFile(`/proc/${p.pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('qemu-system')) {
      signalIdentity(p, 'SIGKILL');
      await waitGone(p, 5000);
    }
  }
  if (record?.vdisk) await stopVdisk(record.vdisk);
  for (const p of await findProcessesMentioning(d.dir + '/')) await terminate(p, 5000);
  for (const t of record?.taps ?? []) await deleteTap(t.tap);
  await clearRuntime(d, record);
}

export async function exitRecordOf(att: Attached, reason: ExitReason, noticedLate = false): Promise<ExitRecord> {
  return {
    reason,
    at: new Date().toISOString(),
    ...(att.record.qemu ? { pid: att.record.qemu.pid } : {}),
    ...(att.childExit ? { exitCode: att.childExit.code, signal: att.childExit.signal } : {}),
    stderrTail: await qemuStderrTail(att.dir.qemuLog),
    ...(noticedLate ? { noticedLate } : {}),
  };
}
