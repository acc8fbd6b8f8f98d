/**
 * Benchmark: API latency with 1,000 defined VMs. A real daemon (private etcd, user-mode
 * network) gets 1,000 VMs created through the API; then `GET /api/v1/vms` is timed (p50/p99
 * over many calls), next to a plain etcd range read of the same keys as the floor it is built
 * on (the peer measured in the same run), and a start call is timed twice: until the 202
 * answer, and until the task reports the VM running (a tiny guest under TCG).
 * Writes bench/results/api-latency.json (or BENCH_OUT).
 *
 *   npm run build && node dist/bench/api/latency.js [VMS]   (VMS default 1000)
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { TestDaemon } from '../../test/helpers/daemon.js';
import { readFile } from 'node:fs/promises';

const N = Number(process.argv[2] ?? 1000);
const CALLS = Number(process.env['BENCH_CALLS'] ?? 200);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

const d = await TestDaemon.start();
try {
  process.stderr.write(`creating ${N} VMs through the API...\n`);
  let made = 0;
  const worker = async (): Promise<void> => {
    while (made < N) {
      const i = made++;
      const r = await d.api('POST', '/api/v1/vms?wait=true', { name: `bench-${i}`, diskSize: '64M', network: 'none' });
      if (r.status !== 200) throw new Error(`create ${i}: ${JSON.stringify(r.body)}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));

  const list: number[] = [];
  for (let i = 0; i < CALLS; i++) list.push(await timed(() => d.api('GET', '/api/v1/vms')));
  const count = ((await d.api('GET', '/api/v1/vms')).body as unknown[]).length;
  if (count < N) throw new Error(`expected ${N} VMs, the API listed ${count}`);

  const etcdUrl = `http://127.0.0.1:${JSON.parse(await readFile(join(d.dataDir, 'etcd', 'ports.json'), 'utf8')).client}`;
  const etcd = new Etcd3({ hosts: etcdUrl });
  const raw: number[] = [];
  for (let i = 0; i < CALLS; i++) raw.push(await timed(() => etcd.getAll().prefix('/flightdeck/vms/').strings()));
  etcd.close();

  const image = await d.cli(['image', 'build', 'tiny', '--probes']);
  if (image.code !== 0) throw new Error(image.stderr);
  await d.json(['vm', 'create', 'bench-start', '--image', 'tiny', '--memory', '128M']);
  let accepted = 0;
  const total = await timed(async () => {
    accepted = await timed(() => d.api('POST', '/api/v1/vms/bench-start/actions/start', {}));
    const r = await d.api('GET', '/api/v1/vms/bench-start');
    const vm = r.body as { id: string };
    for (;;) {
      const v = (await d.api('GET', `/api/v1/vms/${vm.id}`)).body as { state: string };
      if (v.state === 'running') break;
      await new Promise((res) => setTimeout(res, 20));
    }
  });

  const result = {
    vms: N,
    calls: CALLS,
    listVms: { p50Ms: pct(list, 50), p99Ms: pct(list, 99) },
    etcdRangeRead: { p50Ms: pct(raw, 50), p99Ms: pct(raw, 99) },
    ratioListVsEtcd: pct(list, 50) / pct(raw, 50),
    startAcceptedMs: accepted,
    startToRunningMs: total,
  };
  console.log(
    `GET /api/v1/vms with ${N} VMs: p50 ${result.listVms.p50Ms.toFixed(1)} ms, p99 ${result.listVms.p99Ms.toFixed(1)} ms`,
  );
  console.log(
    `etcd range read of the same records (floor): p50 ${result.etcdRangeRead.p50Ms.toFixed(1)} ms, p99 ${result.etcdRangeRead.p99Ms.toFixed(1)} ms`,
  );
  console.log(`ratio API/etcd p50: ${result.ratioListVsEtcd.toFixed(2)}x`);
  console.log(`POST start: 202 after ${accepted.toFixed(1)} ms; VM running after ${total.toFixed(0)} ms`);
  const out =
    process.env['BENCH_OUT'] ??
    join(dirname(fileURLToPath(import.meta.url)), '../../../bench/results/api-latency.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(result, null, 2) + '\n');
} finally {
  await d.dispose();
}
