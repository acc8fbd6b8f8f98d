/**
 * The last hour of each local VM's and of this host's load, for the web UI's graphs: a ring
 * buffer of samples taken every 10 s from the same counters /metrics exports (so there is no
 * second source of truth), turned into rates here. In memory only: a daemon that restarts
 * starts its graphs again, which is what a Proxmox node's RRD-less fallback does too. Each host
 * keeps the history of the VMs it runs; the API relays a VM's request to its owner.
 */
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import type { Logger } from '../core/log.js';
import type { VmStats } from '../cluster/runtime/runtime.js';

export const SAMPLE_INTERVAL_MS = 10_000;
export const HISTORY_SAMPLES = 360; // one hour at 10 s

export type VmSample = {
  /** Unix time, ms. */
  t: number;
  /** CPU time of the VM's process over the last interval, in % of one core. */
  cpuPercent: number | null;
  memoryRssBytes: number | null;
  memoryBytes: number | null;
  diskReadBps: number | null;
  diskWriteBps: number | null;
  netRxBps: number | null;
  netTxBps: number | null;
};

export type HostSample = {
  t: number;
  load1: number;
  cpus: number;
  memoryBytes: number;
  freeMemoryBytes: number;
};

class Ring<T> {
  private readonly items: T[] = [];
  constructor(private readonly size: number) {}
  push(x: T): void {
    this.items.push(x);
    if (this.items.length > this.size) this.items.shift();
  }
  all(): T[] {
    return [...this.items];
  }
}

const rate = (now: number | undefined, prev: number | undefined, dtS: number): number | null =>
  now === undefined || prev === undefined || dtS <= 0 || now < prev ? null : (now - prev) / dtS;

export class MetricsHistory {
  private readonly vms = new Map<string, { ring: Ring<VmSample>; last: { t: number; s: VmStats } | undefined }>();
  private readonly host = new Ring<HostSample>(HISTORY_SAMPLES);
  private timer: NodeJS.Timeout | undefined;
  private sampling: Promise<void> | undefined;

  constructor(
    private readonly stats: () => Promise<VmStats[]>,
    private readonly log: Logger,
    private readonly intervalMs = SAMPLE_INTERVAL_MS,
  ) {}

  start(): void {
    const tick = (): void => {
      this.sampling ??= this.sample()
        .catch((err: unknown) => this.log.warn('metrics sample failed', { err: String(err) }))
        .finally(() => (this.sampling = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sampling;
  }

  /** Takes one sample of every VM running here and of the host. */
  async sample(now = Date.now()): Promise<void> {
    this.host.push({
      t: now,
      load1: loadavg()[0]!,
      cpus: cpus().length,
      memoryBytes: totalmem(),
      freeMemoryBytes: freemem(),
    });
    const seen = new Set<string>();
    for (const s of await this.stats()) {
      seen.add(s.id);
      let h = this.vms.get(s.id);
      if (!h) this.vms.set(s.id, (h = { ring: new Ring(HISTORY_SAMPLES), last: undefined }));
      const dtS = h.last ? (now - h.last.t) / 1000 : 0;
      const p = h.last?.s;
      const cpu = rate(s.cpuSeconds, p?.cpuSeconds, dtS);
      h.ring.push({
        t: now,
        cpuPercent: cpu === null ? null : Math.round(cpu * 1000) / 10,
        memoryRssBytes: s.rssBytes ?? null,
        memoryBytes: s.memoryBytes ?? null,
        diskReadBps: rate(s.diskReadBytes, p?.diskReadBytes, dtS),
        diskWriteBps: rate(s.diskWriteBytes, p?.diskWriteBytes, dtS),
        netRxBps: rate(s.netRxBytes, p?.netRxBytes, dtS),
        netTxBps: rate(s.netTxBytes, p?.netTxBytes, dtS),
      });
      h.last = { t: now, s };
    }
    // A VM that stopped or left keeps its hour (the graph shows the gap), then is forgotten.
    for (const [id, h] of this.vms) {
      if (!seen.has(id)) h.last = undefined;
      const newest = h.ring.all().at(-1);
      if (!seen.has(id) && newest && now - newest.t > HISTORY_SAMPLES * this.intervalMs) this.vms.delete(id);
    }
  }

  vm(id: string): { intervalMs: number; samples: VmSample[] } {
    return { intervalMs: this.intervalMs, samples: this.vms.get(id)?.ring.all() ?? [] };
  }

  hostSamples(): { intervalMs: number; samples: HostSample[] } {
    return { intervalMs: this.intervalMs, samples: this.host.all() };
  }
}
