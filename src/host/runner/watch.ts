/**
 * Watching a running VM: a 200 ms poll of its QEMU and vdisk pids, the child's exit when we
 * spawned it, QMP's close and events. A death is reported once (`gone`); QMP events become VM
 * events, except SHUTDOWN, which only notes whether the guest asked for it.
 */
import type { ChildProcess } from 'node:child_process';
import type { QmpClient, QmpEvent } from '../../qemu/qmp.js';
import { isRunning, waitGone } from '../pidfile.js';
import type { VmDir, VmRecord } from '../run-dir.js';
import type { Attached, VmEventType } from './types.js';

export interface WatchHooks {
  /** Whether `att` is still the runner's record of its VM (a replaced one is ignored). */
  current(att: Attached): boolean;
  gone(att: Attached): void;
  vdiskDied(att: Attached): void;
  event(att: Attached, type: VmEventType, detail: Record<string, unknown>): void;
}

const EVENTS: Record<string, VmEventType> = {
  STOP: 'paused',
  RESUME: 'resumed',
  RESET: 'reset',
  POWERDOWN: 'powerdown',
};

export function watchVm(
  d: VmDir,
  record: VmRecord,
  qmp: QmpClient,
  child: ChildProcess | undefined,
  h: WatchHooks,
): Attached {
  let markGone!: () => void;
  const gone = new Promise<void>((r) => (markGone = r));
  const att: Attached = {
    name: record.spec.name,
    dir: d,
    record,
    qmp,
    poll: setInterval(() => {
      if (record.qemu && !isRunning(record.qemu)) h.gone(att);
      else if (record.vdisk && !isRunning(record.vdisk) && !att.expectingExit) h.vdiskDied(att);
    }, 200),
    gone,
    markGone,
    handled: false,
    ...(child ? { child } : {}),
  };
  att.poll.unref();
  if (child) {
    child.once('exit', (code, signal) => {
      att.childExit = { code, signal };
      h.gone(att);
    });
  }
  qmp.on('event', (ev: QmpEvent) => {
    if (ev.event === 'SHUTDOWN') {
      att.guestShutdown = ev.data['guest'] === true;
      att.lastShutdownReason = String(ev.data['reason'] ?? '');
      return;
    }
    const type = EVENTS[ev.event];
    if (type) h.event(att, type, ev.data);
    else h.event(att, 'qmp', { event: ev.event, ...ev.data });
  });
  qmp.on('close', () => {
    if (!h.current(att)) return;
    // QEMU closes QMP as it exits; give it a moment, then the pid decides
    void waitGone(record.qemu!, 2000).then((goneNow) => {
      if (goneNow) h.gone(att);
    });
  });
  return att;
}

export async function unwatchVm(att: Attached): Promise<void> {
  clearInterval(att.poll);
  att.qmp.removeAllListeners('event');
  att.qmp.removeAllListeners('close');
  await att.qmp.close();
}
