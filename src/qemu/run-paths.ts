/**
 * Where a VM's runtime files live inside its run dir. Everything QEMU exposes (QMP, serial,
 * VNC) is a unix socket, never a TCP port. QEMU's own files are in `q/`, the one place its
 * (unprivileged) user may write; the runner's records stay in the run dir itself, where QEMU
 * cannot change them. Run dirs of VMs started before that split keep the flat layout.
 */
import { join } from 'node:path';

export interface VmRunPaths {
  dir: string;
  /** QEMU's own directory: sockets, pidfile, serial log (the run dir itself when flat). */
  qemuDir: string;
  qmp: string;
  serial: string;
  /** Everything the guest wrote to its serial port, appended across reattaches. */
  serialLog: string;
  vnc: string;
  pidfile: string;
  /** QEMU's stderr: the tail goes into the crash record. */
  qemuLog: string;
}

export function vmRunPaths(dir: string, layout: 'split' | 'flat' = 'split'): VmRunPaths {
  const q = layout === 'split' ? join(dir, 'q') : dir;
  return {
    dir,
    qemuDir: q,
    qmp: join(q, 'qmp.sock'),
    serial: join(q, 'serial.sock'),
    serialLog: join(q, 'serial.log'),
    vnc: join(q, 'vnc.sock'),
    pidfile: join(q, 'qemu.pid'),
    qemuLog: join(dir, 'qemu.log'),
  };
}
