/** A VM's status: from QMP while QEMU runs (never from memory), else from its last exit. */
import { existsSync } from 'node:fs';
import { FdError, isFdError } from '../../core/errors.js';
import { readExit, readRecord, type VmDir } from '../run-dir.js';
import type { Attached, VmState, VmStatus } from './types.js';

export async function vmStatus(name: string, att: Attached | undefined, d: VmDir): Promise<VmStatus> {
  if (att) {
    const base = {
      name,
      pid: att.record.qemu?.pid,
      vdiskPid: att.record.vdisk?.pid,
      accel: att.record.accel,
      startedAt: att.record.startedAt,
      restarts: att.record.restarts,
      spec: att.record.spec,
    };
    try {
      const s = await att.qmp.execute<{ status: string }>('query-status', undefined, { timeoutMs: 3000 });
      const state: VmState =
        s.status === 'running' ? 'running' : s.status === 'paused' || s.status === 'io-error' ? 'paused' : 'transient';
      return { ...base, state, qemuStatus: s.status };
    } catch (err) {
      if (isFdError(err, 'FD_QMP_TIMEOUT')) return { ...base, state: 'unresponsive' };
      if (isFdError(err, 'FD_QMP_CLOSED')) return { ...base, state: 'transient' };
      throw err;
    }
  }
  const [record, lastExit] = await Promise.all([readRecord(d), readExit(d)]);
  if (!record && !lastExit && !existsSync(d.dir))
    throw new FdError('FD_VM_NOT_FOUND', `no VM named ${name} on this host`);
  const crashed = lastExit && (lastExit.reason === 'crashed' || lastExit.reason === 'start-failed');
  return {
    name,
    state: crashed ? 'crashed' : 'stopped',
    restarts: record?.restarts ?? 0,
    ...(lastExit ? { lastExit } : {}),
    ...(record ? { spec: record.spec } : {}),
  };
}
