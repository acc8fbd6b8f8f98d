/**
 * Prometheus metrics at /metrics with prom-client: HELP and TYPE on every metric, the API's
 * latency as a histogram per route, the daemon's process metrics (CPU, memory, event loop lag,
 * handles), and per VM and per host gauges read from the store and the hosts' stats at scrape
 * time. One registry per server, so several daemons in one process (tests) do not mix.
 */
import { freemem, totalmem } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';

const VM_STATES = ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed', 'unknown'];
const PROTECTION_STATES = ['syncing', 'protected', 'degraded'];

type Stats = Awaited<ReturnType<Services['agent']['stats']>>[number];

/** Totals QEMU and the kernel count for us: exposed as counters, set to the value read. */
const VM_COUNTERS: [string, string, (s: Stats) => number | undefined][] = [
  ['flightdeck_vm_cpu_seconds_total', 'CPU time used by the VM process', (s) => s.cpuSeconds],
  ['flightdeck_vm_disk_read_bytes_total', 'bytes read by the guest from its disks', (s) => s.diskReadBytes],
  ['flightdeck_vm_disk_write_bytes_total', 'bytes written by the guest to its disks', (s) => s.diskWriteBytes],
  ['flightdeck_vm_disk_write_ops_total', 'write requests completed on the VM disks', (s) => s.diskWriteOps],
  // Divided by the ops above: the average guest write latency, as QEMU's block layer times it.
  [
    'flightdeck_vm_disk_write_time_seconds_total',
    'time spent in write requests on the VM disks',
    (s) => (s.diskWriteTimeNs === undefined ? undefined : s.diskWriteTimeNs / 1e9),
  ],
  ['flightdeck_vm_net_rx_bytes_total', 'bytes received on the VM NICs', (s) => s.netRxBytes],
  ['flightdeck_vm_net_tx_bytes_total', 'bytes sent on the VM NICs', (s) => s.netTxBytes],
];

export class Metrics {
  readonly registry = new Registry();
  private readonly latency: Histogram<'method' | 'route'>;
  private readonly requests: Counter<'method' | 'route' | 'status'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // Gauges whose names end in _total (promtool: "non-counter metrics should not have _total");
    // the same counts are there as nodejs_active_handles, _requests and _resources.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'])
      this.registry.removeSingleMetric(name);
    this.latency = new Histogram({
      name: 'flightdeck_api_request_seconds',
      help: 'API request latency by route',
      labelNames: ['method', 'route'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [this.registry],
    });
    this.requests = new Counter({
      name: 'flightdeck_api_requests_total',
      help: 'API requests by route and status',
      labelNames: ['method', 'route', 'status'],
      registers: [this.registry],
    });
  }

  observeRequest(route: string, method: string, status: number, ms: number): void {
    this.latency.observe({ method, route }, ms / 1000);
    this.requests.inc({ method, route, status: String(status) });
  }
}

/** The per VM and per host metrics, filled from the store and this host's stats on each scrape. */
class StateMetrics {
  private readonly vmState: Gauge<'vm' | 'host' | 'state'>;
  private readonly protection: Gauge<'vm' | 'standby' | 'state'>;
  private readonly memory: Gauge<'vm'>;
  private readonly rss: Gauge<'vm'>;
  private readonly counters: [Counter<'vm'>, (s: Stats) => number | undefined][];
  private readonly hostGauges: Record<'vms' | 'running' | 'free' | 'total', Gauge<'host'>>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.vmState = new Gauge({
      name: 'flightdeck_vm_state',
      help: '1 for the state the VM is in',
      labelNames: ['vm', 'host', 'state'],
      registers,
    });
    this.protection = new Gauge({
      name: 'flightdeck_vm_protection_state',
      help: '1 for the mirroring state of a protected VM',
      labelNames: ['vm', 'standby', 'state'],
      registers,
    });
    this.memory = new Gauge({
      name: 'flightdeck_vm_memory_bytes',
      help: 'guest memory size',
      labelNames: ['vm'],
      registers,
    });
    this.rss = new Gauge({
      name: 'flightdeck_vm_memory_rss_bytes',
      help: 'resident memory of the VM process',
      labelNames: ['vm'],
      registers,
    });
    this.counters = VM_COUNTERS.map(([name, help, pick]) => [
      new Counter({ name, help, labelNames: ['vm'], registers }),
      pick,
    ]);
    const host = (name: string, help: string) => new Gauge({ name, help, labelNames: ['host'], registers });
    this.hostGauges = {
      vms: host('flightdeck_host_vms', 'VMs this host owns'),
      running: host('flightdeck_host_vms_running', 'VM processes running on this host'),
      free: host('flightdeck_host_memory_free_bytes', 'free memory of this host'),
      total: host('flightdeck_host_memory_bytes', 'memory of this host'),
    };
  }

  async refresh(svc: Services): Promise<void> {
    const [vms, stats] = await Promise.all([svc.vms.list(), svc.agent.stats()]);
    // Reset and set in one synchronous stretch: a scrape never sees a half-filled set.
    for (const g of [this.vmState, this.protection, this.memory, this.rss]) g.reset();
    for (const [c] of this.counters) c.reset();
    for (const vm of vms) {
      for (const s of VM_STATES) this.vmState.set({ vm: vm.name, host: vm.host, state: s }, vm.state === s ? 1 : 0);
      if (vm.protection)
        for (const s of PROTECTION_STATES)
          this.protection.set(
            { vm: vm.name, standby: vm.protection.standby ?? '', state: s },
            vm.protection.state === s ? 1 : 0,
          );
    }
    for (const s of stats) {
      if (s.memoryBytes !== undefined) this.memory.set({ vm: s.name }, s.memoryBytes);
      if (s.rssBytes !== undefined) this.rss.set({ vm: s.name }, s.rssBytes);
      for (const [c, pick] of this.counters) {
        const v = pick(s);
        if (v !== undefined) c.inc({ vm: s.name }, v);
      }
    }
    const host = { host: svc.hostName };
    this.hostGauges.vms.set(host, vms.filter((v) => v.host === svc.hostName).length);
    this.hostGauges.running.set(host, stats.length);
    this.hostGauges.free.set(host, freemem());
    this.hostGauges.total.set(host, totalmem());
  }
}

export function registerMetrics(
  app: FastifyInstance,
  svc: Services,
  metrics: Metrics,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  const state = new StateMetrics(metrics.registry);
  app.get('/metrics', async (req, reply) => {
    await requireAuth(req, 'read');
    await state.refresh(svc);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
}
