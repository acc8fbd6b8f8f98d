/**
 * The Runtime of this host: compiles VM records into QEMU specs (paths of disks, images, ISOs
 * and networks resolved from the store) and drives the host layer's VmRunner, which owns the
 * QEMU and vdisk processes, their reattachment and the restart policy. Runner VMs are named
 * by VM id, so a rename never orphans a running VM.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { detectAccel } from '../../qemu/accel.js';
import type { VmSpecInput } from '../../qemu/spec.js';
import { VmRunner, type VmEvent, type VmStatus as RunnerStatus } from '../../host/runner.js';
import { tapName } from '../../host/tap.js';
import type { VmUserRange } from '../../host/confine/vm-users.js';
import type { ImageRecord, VmRecord } from '../state/model.js';
import type { Runtime, RuntimeStatus, VmStats } from './runtime.js';
import type { Catalog } from '../state/catalog.js';
import { QemuControl } from '../../qemu/control/index.js';

/** HA restarts a crashed VM here (within its budget) even when its own policy says never. */
function restartOf(vm: VmRecord): { restartPolicy: VmRecord['restartPolicy']; maxRestarts?: number } {
  return {
    restartPolicy: vm.ha?.enabled && vm.restartPolicy === 'never' ? 'on-failure' : vm.restartPolicy,
    ...(vm.ha?.enabled ? { maxRestarts: vm.ha.maxRestarts } : {}),
  };
}

function mapStatus(s: RunnerStatus): RuntimeStatus {
  const state =
    s.state === 'running' || s.state === 'paused' || s.state === 'stopped' || s.state === 'crashed'
      ? s.state
      : s.state === 'transient'
        ? 'starting'
        : 'unknown';
  const exit = s.lastExit;
  return {
    state,
    pid: s.pid ?? null,
    lastError: state === 'crashed' && exit ? `${exit.reason}${exit.stderrTail ? ': ' + exit.stderrTail : ''}` : null,
  };
}

async function tailLines(path: string, lines: number): Promise<string[]> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch {
    return [];
  }
  try {
    const { size } = await fh.stat();
    const want = Math.min(size, Math.max(64 * 1024, lines * 200));
    const buf = Buffer.alloc(want);
    await fh.read(buf, 0, want, size - want);
    return buf
      .toString('utf8')
      .replace(/\r/g, '')
      .split('\n')
      .slice(size > want ? 1 : 0)
      .filter((l, i, a) => l !== '' || i < a.length - 1)
      .slice(-lines);
  } finally {
    await fh.close();
  }
}

export async function createLocalRuntime(o: {
  dataDir: string;
  log: Logger;
  /** Disk, image and network records, read from the state cache (no round trip per start). */
  catalog: Catalog;
  /** The reserved ids of the VMs' own users (DATA_DIR/config.json). */
  vmUsers?: VmUserRange;
}): Promise<{ runtime: Runtime; accel: string }> {
  const verdict = await detectAccel({ dataDir: o.dataDir });
  o.log.info('accelerator', { accel: verdict.accel, reason: verdict.reason });
  const runner = new VmRunner({
    dataDir: o.dataDir,
    runDir: join(o.dataDir, 'run'),
    log: o.log.child({ part: 'runner' }),
    accel: verdict.accel,
    ...(o.vmUsers ? { confine: { users: o.vmUsers } } : {}),
  });

  async function compile(vm: VmRecord, diskPaths?: Record<string, string>): Promise<VmSpecInput> {
    const disks = await Promise.all(
      vm.disks.map(async (d) => {
        const override = diskPaths?.[d.id];
        if (override) return { id: d.id, source: { kind: 'vhd' as const, path: override } };
        const rec = o.catalog.findDisk(d.diskId);
        if (!rec) throw new Error(`disk record ${d.diskId} of VM ${vm.name} is missing`);
        return { id: d.id, source: { kind: rec.format, path: rec.path } };
      }),
    );
    const image = async (name: string): Promise<ImageRecord> => {
      const rec = o.catalog.findImage(name);
      if (!rec) throw new Error(`image ${name} of VM ${vm.name} is missing`);
      return rec;
    };
    const cdroms = await Promise.all(
      vm.cdroms.map(async (c) => ({
        id: c.id,
        bus: c.bus ?? 'sata',
        iso: c.path ?? (c.image ? (await image(c.image)).path : null),
      })),
    );
    const nics = await Promise.all(
      vm.nics.map(async (n) => {
        const net = o.catalog.findNetwork(n.network);
        const network =
          (net?.kind === 'nat' || net?.kind === 'vxlan') && net.bridge
            ? { kind: 'bridge' as const, bridge: net.bridge }
            : { kind: 'user' as const };
        return { id: n.id, mac: n.mac, network };
      }),
    );
    let boot: VmSpecInput['boot'] = { order: vm.boot };
    if (vm.kernelImage) {
      const k = await image(vm.kernelImage);
      if (k.kernel)
        boot = { kernel: { kernel: k.kernel, ...(k.initrd ? { initrd: k.initrd } : {}), cmdline: k.cmdline ?? '' } };
    }
    return {
      name: vm.id,
      uuid: vm.id,
      vcpus: vm.cpus,
      memoryBytes: vm.memoryBytes,
      machine: vm.machine,
      firmware: vm.firmware,
      boot,
      disks,
      cdroms,
      nics,
      serial: true,
      vnc: true,
      ...restartOf(vm),
    };
  }

  const listeners: ((id: string, s: RuntimeStatus) => void)[] = [];
  const status = async (id: string): Promise<RuntimeStatus> => {
    try {
      return mapStatus(await runner.status(id));
    } catch (err) {
      if (isFdError(err, 'FD_VM_NOT_FOUND')) return { state: 'stopped', pid: null, lastError: null };
      throw err;
    }
  };
  const publishing = new Map<string, Promise<void>>();
  runner.on('event', (e: VmEvent) => {
    const interesting = [
      'stopped',
      'guest-shutdown',
      'crashed',
      'died-while-away',
      'start-failed',
      'restart-failed',
      'started',
      'paused',
      'resumed',
      'reset',
      'restarting',
      'restart-held',
    ];
    if (!interesting.includes(e.type)) return;
    // Published in the order they happened: a later event's status must not be overtaken by an
    // earlier one's (a crash, then the policy giving up, must end as "gave up").
    const prev = publishing.get(e.vm) ?? Promise.resolve();
    const next = prev.then(() => publish(e));
    publishing.set(e.vm, next);
    void next.finally(() => {
      if (publishing.get(e.vm) === next) publishing.delete(e.vm);
    });
  });
  const publish = (e: VmEvent): Promise<void> =>
    status(e.vm).then(
      (s) => {
        const st: RuntimeStatus = {
          ...s,
          ...(e.type === 'guest-shutdown' ? { guestShutdown: true } : {}),
          ...(e.type === 'restart-held' ? { restartHeld: true } : {}),
        };
        if (e.type === 'restart-failed' && st.state !== 'running')
          st.lastError = `restart policy gave up: ${String(e.detail?.['message'] ?? '')}`;
        for (const l of listeners) l(e.vm, st);
      },
      (err: unknown) => o.log.warn('VM status not published', { vm: e.vm, err: String(err) }),
    );

  const runtime: Runtime = {
    async reattach(ids) {
      await runner.reattachAll();
      const out = new Map<string, RuntimeStatus>();
      for (const id of ids) out.set(id, await status(id));
      return out;
    },
    async start(vm) {
      await runner.start(await compile(vm));
    },
    async startIncoming(vm, diskPaths) {
      // No restart policy on the target until it owns the VM: a restart here would be a
      // second running copy.
      await runner.startIncoming({ ...(await compile(vm, diskPaths)), restartPolicy: 'never' });
    },
    control(id) {
      return new QemuControl(runner.qmp(id));
    },
    async qemuStatus(id) {
      try {
        return await new QemuControl(runner.qmp(id)).run.status({ timeoutMs: 5000 });
      } catch (err) {
        // No QEMU for it here (never started, or gone).
        if (isFdError(err, 'FD_VM_NOT_FOUND') || isFdError(err, 'FD_VM_NOT_RUNNING') || isFdError(err, 'FD_QMP_CLOSED'))
          return null;
        throw err;
      }
    },
    async stop(id, opts) {
      if (opts.graceful) await runner.shutdown(id, { timeoutMs: opts.timeoutMs });
      else await runner.stop(id);
    },
    async setPaused(id, paused) {
      if (paused) await runner.pause(id);
      else await runner.resume(id);
    },
    async reboot(id) {
      await runner.reboot(id);
    },
    status,
    async serialSocket(id) {
      return runner.paths(id).serial;
    },
    async vncSocket(id) {
      return runner.paths(id).vnc;
    },
    async screenshot(id) {
      // QEMU writes the file: into the run dir, under a name no other call uses.
      // In QEMU's own directory: QEMU writes the file as its VM's user.
      const file = join(
        runner.paths(id).qemuDir,
        `screen-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.png`,
      );
      try {
        await new QemuControl(runner.qmp(id)).display.screenshot(file);
        return await readFile(file);
      } finally {
        await rm(file, { force: true });
      }
    },
    async logs(id, lines) {
      const p = runner.paths(id);
      return { serial: await tailLines(p.serialLog, lines), qemu: await tailLines(p.qemuLog, lines) };
    },
    async stats(vms) {
      const out: VmStats[] = [];
      const ticks = 100; // USER_HZ on Linux
      for (const vm of vms) {
        const st = await runner.status(vm.id).catch(() => undefined);
        if (!st?.pid) continue;
        const s: VmStats = { id: vm.id, name: vm.name, memoryBytes: st.spec?.memoryBytes };
        const procStat = await readText(`/proc/${st.pid}/stat`);
        if (procStat) {
          const f = procStat.slice(procStat.lastIndexOf(')') + 2).split(' ');
          s.cpuSeconds = (Number(f[11]) + Number(f[12])) / ticks;
        }
        const procStatus = await readText(`/proc/${st.pid}/status`);
        const rss = /VmRSS:\s+(\d+) kB/.exec(procStatus ?? '');
        if (rss) s.rssBytes = Number(rss[1]) * 1024;
        try {
          const blk = await new QemuControl(runner.qmp(vm.id)).stats.disks(1000);
          s.diskReadBytes = blk.readBytes;
          s.diskWriteBytes = blk.writeBytes;
          s.diskWriteOps = blk.writeOps;
          s.diskWriteTimeNs = blk.writeTimeNs;
        } catch {
          // Stats are best effort: a VM stopping right now has no QMP any more.
        }
        // Bridged NICs: the tap's counters, seen from the guest (the tap's tx is the guest's rx).
        for (const n of st.spec?.nics ?? []) {
          if (n.network.kind !== 'bridge') continue;
          const dir = `/sys/class/net/${tapName(st.spec!.uuid, n.id)}/statistics`;
          const rx = Number(await readText(`${dir}/tx_bytes`));
          const tx = Number(await readText(`${dir}/rx_bytes`));
          if (Number.isFinite(rx)) s.netRxBytes = (s.netRxBytes ?? 0) + rx;
          if (Number.isFinite(tx)) s.netTxBytes = (s.netTxBytes ?? 0) + tx;
        }
        out.push(s);
      }
      return out;
    },
    async localIds() {
      return (await runner.list()).map((s) => s.name);
    },
    async cleanup(id) {
      await runner.remove(id).catch((err: unknown) => {
        if (!isFdError(err, 'FD_VM_NOT_FOUND')) throw err;
      });
    },
    async applyRestartPolicy(vm) {
      const r = restartOf(vm);
      await runner.setRestartPolicy(vm.id, r.restartPolicy, r.maxRestarts);
    },
    setRestartGate(gate) {
      runner.setRestartGate(gate);
    },
    onChange(l) {
      listeners.push(l);
    },
    async close() {
      await runner.close();
    },
  };
  return { runtime, accel: verdict.accel };
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}
