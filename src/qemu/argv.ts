/**
 * VmSpec -> qemu-system-x86_64 argv. Pure: no files are touched, so the whole mapping is unit
 * tested; the runner prepares what the argv refers to (run dir, vdisk sockets, taps, UEFI vars).
 *
 * Choices that matter:
 * - `-nodefaults -no-user-config`: only the devices the spec names exist.
 * - QMP, serial and VNC are unix sockets in the VM's run dir, never TCP ports.
 * - `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`: QEMU
 *   is started as its VM's own user (host/confine), so it never needs setuid. Only the legacy
 *   `runAs` mode (QEMU drops with `-runas` itself) allows elevateprivileges: QEMU 7.2 installs
 *   the seccomp filter before `-runas`, which would die at its own setuid call.
 * - A confined QEMU opens no host file by its path: the runner passes every block file as an
 *   inherited descriptor (`-add-fd`, `/dev/fdset/N`) and copies kernel and initrd into QEMU's
 *   own directory; `ctx.files` says where QEMU finds each file the spec names.
 * - VHD disks reach QEMU only through our vdisk NBD server (`reconnect-delay` lets the vdisk
 *   process restart under a running guest); raw and qcow2 use QEMU's own drivers.
 */
import type { VmSpec, DiskSpec } from './spec.js';
import type { VmRunPaths } from './run-paths.js';
import { qemuIds } from './nodes.js';

export type Accel = 'kvm' | 'tcg';

export interface NbdExport {
  socketPath: string;
  exportName: string;
}

export interface LaunchContext {
  paths: VmRunPaths;
  accel: Accel;
  /** The vdisk NBD export serving each VHD disk, by disk id. */
  nbd?: Record<string, NbdExport>;
  /** The tap device created for each bridged NIC, by NIC id. */
  taps?: Record<string, string>;
  /** Unprivileged user QEMU switches to after opening its files and sockets. */
  runAs?: string;
  /** OVMF code (read-only, shared) and this VM's own copy of the variable store. */
  uefi?: { codePath: string; varsPath: string };
  /** Seconds QEMU's NBD client keeps retrying a lost vdisk connection before failing I/O. */
  nbdReconnectDelayS?: number;
  /** Where QEMU finds a file the spec names, when not at that path (`/dev/fdset/N`, a copy). */
  files?: Record<string, string>;
  /** Descriptors QEMU inherits, each in its own fd set (`-add-fd fd=FD,set=SET`). */
  addFds?: { fd: number; set: number }[];
  /** TCG translation cache size in MiB (bounded, so a memory limit can hold under TCG). */
  tcgCacheMiB?: number;
}

export const QEMU_BINARY = 'qemu-system-x86_64';

const SANDBOX_BASE = 'on,obsolete=deny,spawn=deny,resourcecontrol=deny';

export function buildQemuArgv(spec: VmSpec, ctx: LaunchContext): string[] {
  const a: string[] = [];
  const p = ctx.paths;
  a.push('-name', `guest=${spec.name},debug-threads=on`, '-uuid', spec.uuid);
  a.push('-nodefaults', '-no-user-config', '-msg', 'timestamp=on');
  a.push('-sandbox', `${SANDBOX_BASE},elevateprivileges=${ctx.runAs ? 'allow' : 'deny'}`);
  const tcg = `tcg,thread=multi${ctx.tcgCacheMiB ? `,tb-size=${ctx.tcgCacheMiB}` : ''}`;
  a.push('-machine', `${spec.machine},usb=off`, '-accel', ctx.accel === 'tcg' ? tcg : 'kvm');
  for (const f of ctx.addFds ?? []) a.push('-add-fd', `fd=${f.fd},set=${f.set}`);
  const file = (path: string): string => ctx.files?.[path] ?? path;
  if (ctx.accel === 'kvm') a.push('-cpu', 'host');
  a.push('-smp', String(spec.vcpus), '-m', `${spec.memoryBytes / (1024 * 1024)}M`);
  a.push('-pidfile', p.pidfile, '-qmp', `unix:${p.qmp},server=on,wait=off`);
  a.push('-display', 'none');
  if (spec.vnc) a.push('-vnc', `unix:${p.vnc}`, '-device', 'VGA,id=video0');
  if (spec.serial) {
    a.push(
      '-chardev',
      `socket,id=serial0,path=${p.serial},server=on,wait=off,logfile=${p.serialLog},logappend=on`,
      '-device',
      'isa-serial,chardev=serial0,id=serial0-dev',
    );
  }
  if (spec.firmware === 'uefi') {
    if (!ctx.uefi) throw new Error('uefi firmware needs ctx.uefi (OVMF code and vars paths)');
    a.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${ctx.uefi.codePath}`);
    a.push('-drive', `if=pflash,format=raw,unit=1,file=${file(ctx.uefi.varsPath)}`);
  }
  if (ctx.runAs) a.push('-runas', ctx.runAs);

  const boot = bootIndexes(spec);
  if ('kernel' in spec.boot) {
    const k = spec.boot.kernel;
    a.push('-kernel', file(k.kernel));
    if (k.initrd) a.push('-initrd', file(k.initrd));
    if (k.cmdline) a.push('-append', k.cmdline);
  }

  // AHCI ports on q35 (ide.0..ide.5); pc has two IDE buses with two units each
  let ataSlot = 0;
  const ataBus = (): string => {
    const n = ataSlot++;
    return spec.machine === 'q35' ? `bus=ide.${n}` : `bus=ide.${n >> 1},unit=${n & 1}`;
  };

  for (const d of spec.disks) {
    a.push('-blockdev', JSON.stringify(diskBlockdev(d, ctx)));
    const bi = boot.get(`disk:${d.id}`);
    const dev =
      d.bus === 'virtio'
        ? `virtio-blk-pci,drive=${qemuIds.diskNode(d.id)},id=${qemuIds.diskDevice(d.id)}`
        : `ide-hd,drive=${qemuIds.diskNode(d.id)},id=${qemuIds.diskDevice(d.id)},${ataBus()}`;
    a.push('-device', bi === undefined ? dev : `${dev},bootindex=${bi}`);
  }
  if (spec.cdroms.some((c) => c.bus === 'scsi')) a.push('-device', 'virtio-scsi-pci,id=scsi0');
  for (const c of spec.cdroms) {
    let dev =
      c.bus === 'scsi'
        ? `scsi-cd,id=${qemuIds.cdromDevice(c.id)},bus=scsi0.0`
        : `ide-cd,id=${qemuIds.cdromDevice(c.id)},${ataBus()}`;
    if (c.iso) {
      a.push(
        '-blockdev',
        JSON.stringify({
          driver: 'raw',
          'node-name': qemuIds.cdromNode(c.id),
          'read-only': true,
          file: { driver: 'file', filename: file(c.iso), 'read-only': true },
        }),
      );
      dev += `,drive=${qemuIds.cdromNode(c.id)}`;
    }
    const bi = boot.get(`cdrom:${c.id}`);
    a.push('-device', bi === undefined ? dev : `${dev},bootindex=${bi}`);
  }
  for (const n of spec.nics) {
    if (n.network.kind === 'bridge') {
      const tap = ctx.taps?.[n.id];
      if (!tap) throw new Error(`NIC ${n.id} is bridged but no tap was prepared for it`);
      a.push('-netdev', `tap,id=${qemuIds.netdev(n.id)},ifname=${tap},script=no,downscript=no`);
    } else {
      const fwd = n.network.hostfwd.map((f) => `,hostfwd=${f.protocol}:${f.hostAddr}:${f.hostPort}-:${f.guestPort}`);
      a.push('-netdev', `user,id=${qemuIds.netdev(n.id)}${fwd.join('')}`);
    }
    let dev = `virtio-net-pci,netdev=${qemuIds.netdev(n.id)},mac=${n.mac},id=${qemuIds.nicDevice(n.id)}`;
    const bi = boot.get(`nic:${n.id}`);
    // without network boot the iPXE option ROM is dead weight (and may not be installed)
    dev += bi === undefined ? ',romfile=' : `,bootindex=${bi}`;
    a.push('-device', dev);
  }
  return a;
}

function diskBlockdev(d: DiskSpec, ctx: LaunchContext): Record<string, unknown> {
  const node = qemuIds.diskNode(d.id);
  if (d.source.kind === 'vhd') {
    const nbd = ctx.nbd?.[d.id];
    if (!nbd) throw new Error(`VHD disk ${d.id} has no vdisk NBD export`);
    return {
      driver: 'nbd',
      'node-name': node,
      server: { type: 'unix', path: nbd.socketPath },
      export: nbd.exportName,
      'reconnect-delay': ctx.nbdReconnectDelayS ?? 10,
      'read-only': d.readOnly,
    };
  }
  return {
    driver: d.source.kind,
    'node-name': node,
    'read-only': d.readOnly,
    file: { driver: 'file', filename: ctx.files?.[d.source.path] ?? d.source.path, 'read-only': d.readOnly },
  };
}

/** bootindex per device from the spec's boot order: devices of the first kind boot first. */
function bootIndexes(spec: VmSpec): Map<string, number> {
  const m = new Map<string, number>();
  if (!('order' in spec.boot)) return m;
  let i = 1;
  for (const kind of spec.boot.order) {
    if (kind === 'disk') for (const d of spec.disks) m.set(`disk:${d.id}`, i++);
    if (kind === 'cdrom') for (const c of spec.cdroms) m.set(`cdrom:${c.id}`, i++);
    if (kind === 'network') for (const n of spec.nics) m.set(`nic:${n.id}`, i++);
  }
  return m;
}
