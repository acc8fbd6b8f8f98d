/**
 * Where a VM's runtime files live inside its run dir. Everything QEMU exposes (QMP, serial,
 * VNC) is a unix socket here, never a TCP port; the pidfiles and logs here are what a restarted
 * runner reattaches from.
 */
import { join } from 'node:path';

export interface VmRunPaths {
  dir: string;
  qmp: string;
  serial: string;
  /** Everything the guest wrote to its serial port, appended across reattaches. */
  serialLog: string;
  vnc: string;
  pidfile: string;
  /** QEMU's stderr: the tail goes into the crash record. */
  qemuLog: string;
}

export function vmRunPaths(dir: string): VmRunPaths {
  return {
    dir,
    qmp: join(dir, 'qmp.sock'),
    serial: join(dir, 'serial.sock'),
    serialLog: join(dir, 'serial.log'),
    vnc: join(dir, 'vnc.sock'),
    pidfile: join(dir, 'qemu.pid'),
    qemuLog: join(dir, 'qemu.log'),
  };
}
