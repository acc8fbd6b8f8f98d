/** Prometheus text at /metrics: per VM, per host, and the API's own latency. */
import { freemem, totalmem } from 'node:os';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';

const BUCKETS_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

export class Metrics {
  private readonly hist = new Map<string, { counts: number[]; sum: number; n: number }>();
  private readonly requests = new Map<string, number>();

  observeRequest(route: string, method: string, status: number, ms: number): void {
    const key = `method="${method}",route="${route}"`;
    let h = this.hist.get(key);
    if (!h) this.hist.set(key, (h = { counts: BUCKETS_MS.map(() => 0), sum: 0, n: 0 }));
    BUCKETS_MS.forEach((b, i) => {
      if (ms <= b) h.counts[i]!++;
    });
    h.sum += ms / 1000;
    h.n++;
    const rk = `${key},status="${status}"`;
    this.requests.set(rk, (this.requests.get(rk) ?? 0) + 1);
  }

  render(): string[] {
    const out = [
      '# HELP flightdeck_api_request_seconds API request latency',
      '# TYPE flightdeck_api_request_seconds histogram',
    ];
    for (const [k, h] of this.hist) {
      BUCKETS_MS.forEach((b, i) =>
        out.push(`flightdeck_api_request_seconds_bucket{${k},le="${b / 1000}"} ${h.counts[i]}`),
      );
      out.push(`flightdeck_api_request_seconds_bucket{${k},le="+Inf"} ${h.n}`);
      out.push(
        `flightdeck_api_request_seconds_sum{${k}} ${h.sum}`,
        `flightdeck_api_request_seconds_count{${k}} ${h.n}`,
      );
    }
    out.push('# TYPE flightdeck_api_requests_total counter');
    for (const [k, n] of this.requests) out.push(`flightdeck_api_requests_total{${k}} ${n}`);
    return out;
  }
}

const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');

export function registerMetrics(
  app: FastifyInstance,
  svc: Services,
  metrics: Metrics,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.get('/metrics', async (req, reply) => {
    await requireAuth(req, 'read');
    const vms = await svc.vms.list();
    const stats = await svc.agent.stats();
    const lines: string[] = [];
    const states = ['stopped', 'starting', 'running', 'paused', 'stopping', 'crashed', 'unknown'];
    lines.push('# HELP flightdeck_vm_state 1 for the state the VM is in', '# TYPE flightdeck_vm_state gauge');
    for (const vm of vms) {
      for (const s of states)
        lines.push(
          `flightdeck_vm_state{vm="${esc(vm.name)}",host="${esc(vm.host)}",state="${s}"} ${vm.state === s ? 1 : 0}`,
        );
    }
    lines.push(
      '# HELP flightdeck_vm_protection_state 1 for the mirroring state of a protected VM',
      '# TYPE flightdeck_vm_protection_state gauge',
    );
    for (const vm of vms) {
      if (!vm.protection) continue;
      for (const s of ['syncing', 'protected', 'degraded'])
        lines.push(
          `flightdeck_vm_protection_state{vm="${esc(vm.name)}",standby="${esc(vm.protection.standby ?? '')}",state="${s}"} ${vm.protection.state === s ? 1 : 0}`,
        );
    }
    const gauge = (
      name: string,
      help: string,
      type: 'gauge' | 'counter',
      pick: (s: (typeof stats)[number]) => number | undefined,
    ): void => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const s of stats) {
        const v = pick(s);
        if (v !== undefined) lines.push(`${name}{vm="${esc(s.name)}"} ${v}`);
      }
    };
    gauge('flightdeck_vm_cpu_seconds_total', 'CPU time used by the VM process', 'counter', (s) => s.cpuSeconds);
    gauge('flightdeck_vm_memory_bytes', 'guest memory size', 'gauge', (s) => s.memoryBytes);
    gauge('flightdeck_vm_memory_rss_bytes', 'resident memory of the VM process', 'gauge', (s) => s.rssBytes);
    gauge(
      'flightdeck_vm_disk_read_bytes_total',
      'bytes read by the guest from its disks',
      'counter',
      (s) => s.diskReadBytes,
    );
    gauge(
      'flightdeck_vm_disk_write_bytes_total',
      'bytes written by the guest to its disks',
      'counter',
      (s) => s.diskWriteBytes,
    );
    gauge(
      'flightdeck_vm_disk_write_ops_total',
      'write requests completed on the VM disks',
      'counter',
      (s) => s.diskWriteOps,
    );
    // Divided by the ops above: the average guest write latency, as QEMU's block layer times it.
    gauge(
      'flightdeck_vm_disk_write_time_seconds_total',
      'time spent in write requests on the VM disks',
      'counter',
      (s) => (s.diskWriteTimeNs === undefined ? undefined : s.diskWriteTimeNs / 1e9),
    );
    gauge('flightdeck_vm_net_rx_bytes_total', 'bytes received on the VM NICs', 'counter', (s) => s.netRxBytes);
    gauge('flightdeck_vm_net_tx_bytes_total', 'bytes sent on the VM NICs', 'counter', (s) => s.netTxBytes);
    const h = `host="${esc(svc.hostName)}"`;
    lines.push(
      '# TYPE flightdeck_host_vms gauge',
      `flightdeck_host_vms{${h}} ${vms.filter((v) => v.host === svc.hostName).length}`,
    );
    lines.push('# TYPE flightdeck_host_vms_running gauge', `flightdeck_host_vms_running{${h}} ${stats.length}`);
    lines.push(
      '# TYPE flightdeck_host_memory_free_bytes gauge',
      `flightdeck_host_memory_free_bytes{${h}} ${freemem()}`,
    );
    lines.push('# TYPE flightdeck_host_memory_bytes gauge', `flightdeck_host_memory_bytes{${h}} ${totalmem()}`);
    lines.push(...metrics.render());
    return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n');
  });
}
