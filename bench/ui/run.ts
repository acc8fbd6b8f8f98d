/**
 * Benchmark: the web UI with a big fleet. A real daemon gets 1,000 and then 10,000 VM records
 * (written straight into its etcd as the API writes them: creating 10,000 VMs with disks
 * through the API would take the benchmark's whole budget, and the list reads only the
 * records); then, in Debian's Chromium, the time from pressing "Sign in" to the fleet list
 * rendered with every VM counted, and the frame times while the list scrolls for 3 s. The
 * peer in the same run: the API's own `GET /api/v1/vms` latency (the floor the UI builds on),
 * so the ratio says what the browser adds.
 * Writes bench/results/ui.json (or BENCH_OUT).
 *
 *   npm run build && node dist/bench/ui/run.js [COUNTS]   (COUNTS default 1000,10000)
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { TestDaemon } from '../../test/helpers/daemon.js';
import { launchChromium } from '../../test/helpers/browser.js';

const COUNTS = (process.argv[2] ?? '1000,10000').split(',').map(Number);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

function record(i: number, host: string) {
  const id = randomUUID();
  const now = new Date().toISOString();
  return {
    id,
    name: `vm-${String(i).padStart(5, '0')}`,
    cpus: 1 + (i % 4),
    memoryBytes: (128 + (i % 8) * 128) * 1024 * 1024,
    machine: 'q35',
    firmware: 'bios',
    boot: ['disk'],
    kernelImage: null,
    disks: [],
    cdroms: [],
    nics: [{ id: 'net0', mac: '52:54:00:00:00:01', network: 'default', ip: `10.0.${(i >> 8) & 255}.${i & 255}` }],
    restartPolicy: 'never',
    antiAffinity: i % 10 === 0 ? 'db' : null,
    desired: 'stopped',
    ha: null,
    host,
    image: null,
    createdAt: now,
    updatedAt: now,
  };
}

const d = await TestDaemon.start();
const browser = await launchChromium();
const results: Record<string, unknown>[] = [];
try {
  const ports = JSON.parse(await readFile(join(d.dataDir, 'etcd', 'ports.json'), 'utf8')) as { client: number };
  const etcd = new Etcd3({ hosts: `http://127.0.0.1:${ports.client}` });
  const host = ((await d.api('GET', '/api/v1/hosts')).body as { name: string }[])[0]!.name;
  let have = 0;
  for (const n of COUNTS) {
    for (let i = have; i < n; i += 250) {
      const batch = Array.from({ length: Math.min(250, n - i) }, (_, k) => record(i + k, host));
      await Promise.all(
        batch.flatMap((r) => [
          etcd.put(`/flightdeck/vms/${r.id}`).value(JSON.stringify(r)),
          etcd.put(`/flightdeck/vm-names/${r.name}`).value(JSON.stringify(r.id)),
        ]),
      );
    }
    have = n;
    const api: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      const r = await d.api('GET', '/api/v1/vms');
      api.push(performance.now() - t0);
      if (!Array.isArray(r.body) || r.body.length !== n)
        throw new Error(`API listed ${JSON.stringify(r.body).slice(0, 300)} for ${n} VMs`);
    }
    const signIn: number[] = [];
    const frames: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await ctx.newPage();
      await page.goto(d.url + '/');
      await page.getByLabel('API token', { exact: true }).fill(d.token);
      const t0 = Date.now();
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.getByText(`${n} of ${n}`).waitFor({ timeout: 120_000 });
      await page.getByRole('link', { name: 'vm-00000', exact: true }).waitFor();
      signIn.push(Date.now() - t0);
      const f = await page.locator('[data-testid="vm-list"]').evaluate(
        (el: HTMLElement) =>
          new Promise<number[]>((resolve) => {
            const out: number[] = [];
            let last = performance.now();
            const end = last + 3000;
            const step = (t: number): void => {
              out.push(t - last);
              last = t;
              el.scrollTop += 400;
              if (el.scrollTop + el.clientHeight >= el.scrollHeight) el.scrollTop = 0;
              if (t < end) requestAnimationFrame(step);
              else resolve(out.slice(1));
            };
            requestAnimationFrame(step);
          }),
      );
      frames.push(...f);
      await ctx.close();
    }
    const r = {
      vms: n,
      apiListMs: { p50: pct(api, 50), p95: pct(api, 95) },
      signInToListMs: { p50: pct(signIn, 50), max: Math.max(...signIn), runs: signIn },
      scrollFrameMs: { p50: pct(frames, 50), p95: pct(frames, 95), max: Math.max(...frames), frames: frames.length },
      ratioSignInVsApiList: pct(signIn, 50) / pct(api, 50),
      loadavg: loadavg(),
    };
    results.push(r);
    console.log(
      `${n} VMs: GET /api/v1/vms p50 ${r.apiListMs.p50.toFixed(0)} ms; sign-in to rendered list p50 ${r.signInToListMs.p50} ms ` +
        `(${r.ratioSignInVsApiList.toFixed(1)}x the API call); scroll frames p50 ${r.scrollFrameMs.p50.toFixed(1)} ms, ` +
        `p95 ${r.scrollFrameMs.p95.toFixed(1)} ms, max ${r.scrollFrameMs.max.toFixed(1)} ms (load ${r.loadavg.map((x) => x.toFixed(2)).join(' ')})`,
    );
  }
  etcd.close();
  const out =
    process.env['BENCH_OUT'] ?? join(dirname(fileURLToPath(import.meta.url)), '../../../bench/results/ui.json');
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify({ at: new Date().toISOString(), results }, null, 2) + '\n');
} finally {
  await browser.close();
  await d.dispose();
}
