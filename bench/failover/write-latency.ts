/**
 * Guest write latency with and without mirroring, from QEMU's own block accounting as the
 * daemon exports it at /metrics (flightdeck_vm_disk_write_time_seconds_total over
 * flightdeck_vm_disk_write_ops_total, from query-blockstats of the guest's devices). The write
 * load is the tiny guest's durable counter: a 4 KiB O_DIRECT|O_DSYNC write every 50 ms.
 */
import type { Lab } from '../../src/lab/lab.js';
import { sleep } from '../../src/core/process.js';

export interface WriteWindow {
  label: string;
  seconds: number;
  writeOps: number;
  avgWriteLatencyMs: number | null;
  /** The counters the guest printed per second in the window (20/s when writes keep up). */
  countersPerSecond: number;
}

interface Sample {
  ops: number;
  timeS: number;
}

function metric(text: string, name: string, vm: string): number {
  const re = new RegExp(`^${name}\\{vm="${vm}"\\} (\\S+)$`, 'm');
  const m = re.exec(text);
  if (!m) throw new Error(`/metrics has no ${name} for ${vm}`);
  return Number(m[1]);
}

/** The VM's write counters from `host`'s /metrics (its owner: only the owner reports stats). */
export async function writeSample(lab: Lab, host: string, vm: string): Promise<Sample> {
  const res = await lab.api<string>(host, 'GET', '/metrics', undefined, 10_000);
  if (res.status !== 200 || typeof res.body !== 'string') throw new Error(`GET /metrics on ${host}: ${res.status}`);
  return {
    ops: metric(res.body, 'flightdeck_vm_disk_write_ops_total', vm),
    timeS: metric(res.body, 'flightdeck_vm_disk_write_time_seconds_total', vm),
  };
}

/** Average write latency over the next `seconds`; `counted` gives the guest's counter lines so far. */
export async function writeWindow(
  lab: Lab,
  host: string,
  vm: string,
  label: string,
  seconds: number,
  counted: () => number,
): Promise<WriteWindow> {
  const a = await writeSample(lab, host, vm);
  const c0 = counted();
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const b = await writeSample(lab, host, vm);
  const elapsedS = (Date.now() - t0) / 1000;
  const ops = b.ops - a.ops;
  return {
    label,
    seconds: elapsedS,
    writeOps: ops,
    avgWriteLatencyMs: ops > 0 ? ((b.timeS - a.timeS) / ops) * 1000 : null,
    countersPerSecond: (counted() - c0) / elapsedS,
  };
}
