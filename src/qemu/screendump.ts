/**
 * The guest's screen as a PNG, through QMP `screendump` (QEMU 7.1+ writes PNG itself). QEMU
 * writes the file, so `file` must be a path QEMU can write: the VM's run dir.
 */
import type { QmpClient } from './qmp.js';

export async function screendump(qmp: QmpClient, file: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  await qmp.execute('screendump', { filename: file, format: 'png' }, { timeoutMs: opts.timeoutMs ?? 5000 });
}
