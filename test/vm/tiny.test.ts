/**
 * The runner with the tiny Linux guest under TCG, booting from a differencing VHD over the shared
 * base image through our vdisk process. Reads the guest's own probes on the serial console:
 * heartbeat (sequence + guest monotonic clock), durable counter, power button / poweroff.
 * Two boots, one guest at a time.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep, waitFor } from '../../src/core/process.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { parseProbeLine, type ProbeEvent } from '../../src/host/images/probes.js';
import { existsSync } from 'node:fs';
import {
  buildTinyImage,
  tinyImagePaths,
  TINY_CMDLINE,
  withProbes,
  type TinyImagePaths,
} from '../../src/host/images/tiny.js';
import type { VmRunner } from '../../src/host/runner.js';
import type { VmSpecInput } from '../../src/qemu/spec.js';
import { nextEvent, testHost, type TestHost } from './helpers.js';

let host: TestHost;
let img: TinyImagePaths & { cmdline: string };
before(async () => {
  host = await testHost();
  // the cached image as is (building checks apt for package versions, which is slow)
  const cached = tinyImagePaths();
  img = withProbes(existsSync(cached.manifest) ? { ...cached, cmdline: TINY_CMDLINE } : await buildTinyImage());
});
after(async () => {
  await host.dispose();
});

async function probes(r: VmRunner, name: string): Promise<ProbeEvent[]> {
  const text = await readFile(r.paths(name).serialLog, 'latin1').catch(() => '');
  return text.split('\n').flatMap((l) => {
    const ev = parseProbeLine(l);
    return ev ? [ev] : [];
  });
}

type Heartbeat = Extract<ProbeEvent, { kind: 'heartbeat' }>;
const heartbeats = (evs: ProbeEvent[]): Heartbeat[] => evs.filter((e): e is Heartbeat => e.kind === 'heartbeat');
const counters = (evs: ProbeEvent[]): bigint[] =>
  evs.flatMap((e) => (e.kind === 'counter' || e.kind === 'counter-start' ? [e.n] : []));

function heartbeatAfter(r: VmRunner, name: string, seq: number): Promise<Heartbeat> {
  return waitFor(
    `${name} heartbeat after seq ${seq}`,
    async () => heartbeats(await probes(r, name)).find((h) => h.seq > seq),
    { timeoutMs: 60_000, intervalMs: 100 },
  );
}

const sha256 = async (path: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

function tinySpec(name: string, disk: string): VmSpecInput {
  return {
    name,
    uuid: randomUUID(),
    memoryBytes: 160 << 20,
    boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline } },
    disks: [{ id: 'root', source: { kind: 'vhd', path: disk } }],
    nics: [{ id: 'n0', mac: '52:54:00:fd:00:01', network: { kind: 'user' } }],
  };
}

const CHILD = fileURLToPath(new URL('./runner-child.js', import.meta.url));

test('tiny guest off a differencing VHD: heartbeat, reattach after runner SIGKILL, pause gap, graceful shutdown', async () => {
  const baseHash = await sha256(img.disk);
  const child = join(host.root, 'tiny-child.vhd');
  await createDifferencingVhd(child, img.disk);
  const spec = tinySpec('tiny', child);

  // a runner in its own process starts the VM, then dies by SIGKILL
  await host.closeRunners();
  const c = spawn(
    process.execPath,
    [CHILD, JSON.stringify({ runDir: host.runDir, dataDir: host.dataDir, spec, op: 'start' })],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  c.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise((r) => c.once('exit', r));
  await waitFor('child runner started the VM', () => (/STARTED (\d+)/.test(out) ? true : undefined), {
    timeoutMs: 60_000,
  });
  const pid = Number(/STARTED (\d+)/.exec(out)![1]);
  const r = await host.runner();
  const first = await heartbeatAfter(r, 'tiny', 0);
  assert.ok(first.monotonicNs > 0n, 'heartbeat carries the guest monotonic clock');
  c.kill('SIGKILL');
  await exited;

  assert.deepEqual(
    (await r.reattachAll()).filter((x) => x.name === 'tiny'),
    [{ name: 'tiny', outcome: 'attached' }],
  );
  const s = await r.status('tiny');
  assert.equal(s.pid, pid, 'same QEMU process after reattach');
  assert.equal(s.state, 'running');
  const later = await heartbeatAfter(r, 'tiny', first.seq + 5);
  assert.ok(later.monotonicNs > first.monotonicNs, 'guest clock continues: the guest was not rebooted');

  // pause: no heartbeat while paused, then they resume where they left off
  await r.pause('tiny');
  const frozen = heartbeats(await probes(r, 'tiny')).at(-1)!;
  await sleep(1000); // the guest beats every few ms when running
  assert.equal(heartbeats(await probes(r, 'tiny')).at(-1)!.seq, frozen.seq, 'heartbeat: no beat while paused');
  await r.resume('tiny');
  const resumed = await heartbeatAfter(r, 'tiny', frozen.seq);
  assert.equal(resumed.seq, frozen.seq + 1, 'heartbeat sequence continues without a reset');

  // ACPI needs the guest's init to be done (FD-READY): a power button pressed earlier is lost
  await waitFor(
    'FD-READY and a durable counter',
    async () => {
      const evs = await probes(r, 'tiny');
      return evs.some((e) => e.kind === 'ready') && counters(evs).length ? true : undefined;
    },
    { timeoutMs: 120_000 },
  );
  const res = await r.shutdown('tiny', { timeoutMs: 60_000 });
  assert.deepEqual(res, { graceful: true });
  const evs = await probes(r, 'tiny');
  assert.ok(
    evs.some((e) => e.kind === 'powerbtn'),
    'guest saw the ACPI power button',
  );
  assert.ok(
    evs.some((e) => e.kind === 'poweroff'),
    'guest powered off by itself',
  );
  assert.equal((await r.status('tiny')).lastExit?.reason, 'stopped');
  assert.equal(await sha256(img.disk), baseHash, 'the shared base image is never written');
  const lastCounter = counters(evs).at(-1)!;

  // second boot from the same child: the durable counter continues from the disk
  await r.remove('tiny');
  await r.start(spec);
  await waitFor(
    'counter-start',
    async () => ((await probes(r, 'tiny')).some((e) => e.kind === 'counter-start') ? true : undefined),
    {
      timeoutMs: 60_000,
    },
  );
  const start = (await probes(r, 'tiny')).find((e) => e.kind === 'counter-start') as { n: bigint };
  assert.ok(start.n >= lastCounter, `durable counter: disk holds ${start.n}, last printed ${lastCounter}`);

  // a guest that cannot react (paused) is force-stopped when the graceful timeout runs out
  await r.pause('tiny');
  assert.deepEqual(await r.shutdown('tiny', { timeoutMs: 1000 }), { graceful: false });
  assert.equal((await r.status('tiny')).state, 'stopped');
});

test('a dead vdisk is revived under the running guest; a guest that powers itself off is guest-shutdown, not restarted by on-failure', async () => {
  const disk = join(host.root, 'tiny-off.vhd');
  await createDifferencingVhd(disk, img.disk);
  const r = await host.runner();
  await r.start({ ...tinySpec('tinyoff', disk), restartPolicy: 'on-failure' });
  // the guest listens for the power button once its init is done (FD-READY); a press before is lost
  await waitFor(
    'FD-READY',
    async () => ((await probes(r, 'tinyoff')).some((e) => e.kind === 'ready') ? true : undefined),
    {
      timeoutMs: 120_000,
    },
  );
  // the vdisk process dies under the running guest: the runner starts it again on the same
  // socket, QEMU's NBD client reconnects, and the guest's durable counter keeps being written
  const st = await r.status('tinyoff');
  const revived = nextEvent(r, (e) => e.vm === 'tinyoff' && e.type === 'vdisk-restarted', 60_000);
  const countBefore = counters(await probes(r, 'tinyoff')).at(-1) ?? 0n;
  process.kill(st.vdiskPid!, 'SIGKILL');
  const ev = await revived;
  assert.equal(ev.detail?.['deadPid'], st.vdiskPid);
  assert.notEqual((await r.status('tinyoff')).vdiskPid, st.vdiskPid);
  await waitFor(
    'durable counter written after the vdisk restart',
    async () => ((counters(await probes(r, 'tinyoff')).at(-1) ?? 0n) > countBefore + 2n ? true : undefined),
    { timeoutMs: 60_000 },
  );

  const off = nextEvent(r, (e) => e.vm === 'tinyoff' && ['guest-shutdown', 'crashed'].includes(e.type), 120_000).then(
    (e) => e.type,
  );
  // the power button pressed behind the runner's back: to the runner, the guest chose to stop
  await r.qmp('tinyoff').execute('system_powerdown');
  assert.equal(await off, 'guest-shutdown');
  await sleep(1000);
  const s = await r.status('tinyoff');
  assert.equal(s.state, 'stopped', 'not restarted: a guest shutdown is not a failure');
  assert.equal(s.lastExit?.reason, 'guest-shutdown');
});
