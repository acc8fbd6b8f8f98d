/**
 * A cgroup per running VM with CPU, memory and pids limits that follow its size, whatever this
 * host runs: a systemd scope where systemd is the init (it owns the tree), cgroup v2 where the
 * unified hierarchy is mounted alone, else the v1 `cpu`, `memory` and `pids` controllers. Groups
 * are made below the daemon's own cgroup of each hierarchy (its own limits still apply to
 * everything it starts), in a `flightdeck-vms` folder.
 *
 * QEMU enters its group before it runs: the command is wrapped in a shell that writes its own
 * pid into the group (v1, v2) or in `systemd-run --scope` (systemd), then execs QEMU.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from '../../core/errors.js';
import { MiB } from '../../core/units.js';

export type CgroupKind = 'systemd' | 'v2' | 'v1' | 'none';

export interface VmLimits {
  /** CPU time per 100 ms period, in µs (vCPUs and half a CPU for QEMU's own threads). */
  cpuQuotaUs: number;
  cpuPeriodUs: number;
  memoryBytes: number;
  pids: number;
}

export interface VmCgroup {
  kind: CgroupKind;
  /** Directories made for the VM (v1: one per controller), removed when it stops. */
  dirs: string[];
  /** systemd: the scope's unit name. */
  unit?: string;
  limits: VmLimits;
}

const CGROUP_ROOT = '/sys/fs/cgroup';
const FOLDER = 'flightdeck-vms';
const PERIOD_US = 100_000;

/**
 * The limits a VM of this size gets. Memory: the guest's RAM, a quarter more for QEMU's own
 * allocations (device state, I/O buffers, page tables), 256 MiB of headroom, and under TCG the
 * translation cache QEMU is told to use.
 */
export function limitsFor(vcpus: number, memoryBytes: number, tcgCacheBytes = 0): VmLimits {
  return {
    cpuPeriodUs: PERIOD_US,
    cpuQuotaUs: vcpus * PERIOD_US + PERIOD_US / 2,
    memoryBytes: memoryBytes + Math.ceil(memoryBytes / 4) + 256 * MiB + tcgCacheBytes,
    pids: 128 + 8 * vcpus,
  };
}

export function detectCgroups(): CgroupKind {
  if (existsSync('/run/systemd/system') && existsSync('/usr/bin/systemd-run')) return 'systemd';
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) return 'v2';
  if (['cpu', 'memory', 'pids'].every((c) => existsSync(join(CGROUP_ROOT, c, 'cgroup.procs')))) return 'v1';
  return 'none';
}

/** The daemon's own path in a v1 hierarchy (from /proc/self/cgroup), '/' when not listed. */
async function ownPath(controller: string): Promise<string> {
  const text = await readFile('/proc/self/cgroup', 'utf8');
  for (const line of text.split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (ctrls !== undefined && ctrls.split(',').includes(controller)) return path ?? '/';
  }
  return '/';
}

async function write(path: string, value: string): Promise<void> {
  await writeFile(path, value);
}

/**
 * Makes the VM's group and sets its limits (nothing moves into it yet). `name` is unique on the
 * host (the VM's QEMU uid serves).
 */
export async function createVmCgroup(kind: CgroupKind, name: string, limits: VmLimits): Promise<VmCgroup> {
  if (kind === 'none') return { kind, dirs: [], limits };
  if (kind === 'systemd') return { kind, dirs: [], unit: `flightdeck-vm-${name}.scope`, limits };
  if (kind === 'v2') {
    const parent = join(CGROUP_ROOT, FOLDER);
    await mkdir(parent, { recursive: true });
    // Controllers must be enabled for the children of every level down to the VM's group.
    await write(join(CGROUP_ROOT, 'cgroup.subtree_control'), '+cpu +memory +pids').catch(() => undefined);
    await write(join(parent, 'cgroup.subtree_control'), '+cpu +memory +pids');
    const dir = join(parent, name);
    await mkdir(dir, { recursive: true });
    await write(join(dir, 'cpu.max'), `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`);
    await write(join(dir, 'memory.max'), String(limits.memoryBytes));
    await write(join(dir, 'pids.max'), String(limits.pids));
    return { kind, dirs: [dir], limits };
  }
  const dirs: string[] = [];
  for (const c of ['cpu', 'memory', 'pids']) {
    const dir = join(CGROUP_ROOT, c, await ownPath(c), FOLDER, name);
    await mkdir(dir, { recursive: true });
    dirs.push(dir);
  }
  const [cpu, memory, pids] = dirs as [string, string, string];
  await write(join(cpu, 'cpu.cfs_period_us'), String(limits.cpuPeriodUs));
  await write(join(cpu, 'cpu.cfs_quota_us'), String(limits.cpuQuotaUs));
  await write(join(memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
  await write(join(pids, 'pids.max'), String(limits.pids));
  return { kind, dirs, limits };
}

/** The command that runs `argv` inside the group: QEMU is in it before its first instruction. */
export function enterCgroupCommand(cg: VmCgroup, argv: string[]): string[] {
  if (cg.kind === 'none') return argv;
  if (cg.kind === 'systemd') {
    const l = cg.limits;
    return [
      'systemd-run',
      '--scope',
      '--quiet',
      '--collect',
      `--unit=${cg.unit}`,
      '--slice=flightdeck.slice',
      `-pCPUQuota=${Math.round((l.cpuQuotaUs / l.cpuPeriodUs) * 100)}%`,
      `-pMemoryMax=${l.memoryBytes}`,
      `-pTasksMax=${l.pids}`,
      '--',
      ...argv,
    ];
  }
  const script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"';
  return ['/bin/sh', '-c', script, 'sh', ...cg.dirs.map((d) => join(d, 'cgroup.procs')), '--', ...argv];
}

/** Removes the VM's group once its processes are gone (a busy group is left for the next try). */
export async function removeVmCgroup(cg: VmCgroup | undefined): Promise<void> {
  for (const dir of cg?.dirs ?? []) {
    await rmdir(dir).catch((err: unknown) => {
      if (!isErrno(err, 'ENOENT') && !isErrno(err, 'EBUSY')) throw err;
    });
  }
}
