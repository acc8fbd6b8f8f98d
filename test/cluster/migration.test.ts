/**
 * Live migration between two daemons on one etcd (loopback; the lab tests the same across
 * network namespaces): the guest keeps running through the move (heartbeat sequence and
 * uptime continue), its disk comes along (durable counter), there is one QEMU for it at every
 * check, and a cancelled migration leaves it where it was with nothing left on the target.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { TestDaemon, pidsUnder } from '../helpers/daemon.js';
import { sleep, waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';
import { readCounterFromImage } from '../../src/host/images/vhd.js';

interface Vm {
  id: string;
  host: string;
  state: string;
}
interface Task<R = unknown> {
  id: string;
  state: string;
  result: R;
  error: { code: string; message: string } | null;
  log: { msg: string }[];
}
interface Mig {
  from: string;
  to: string;
  downtimeMs: number;
  totalTimeMs: number;
}

let h1: TestDaemon;
let h2: TestDaemon;
const byName = (): Record<string, TestDaemon> => ({ h1, h2 });

before(async () => {
  h1 = await TestDaemon.start({ hostName: 'h1' });
  h2 = await TestDaemon.start({ hostName: 'h2', etcd: await h1.etcdUrl() });
  assert.equal((await h1.cli(['image', 'build', 'tiny', '--probes'])).code, 0);
});
after(async () => {
  h1?.kill();
  h2?.kill();
  await h2?.dispose();
  await h1?.dispose();
});

async function qemus(id: string): Promise<{ host: string; pid: number }[]> {
  const out: { host: string; pid: number }[] = [];
  for (const [host, d] of Object.entries(byName())) {
    for (const pid of await pidsUnder(join(d.dataDir, 'run', id))) {
      const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
      if (comm.startsWith('qemu-system')) out.push({ host, pid });
    }
  }
  return out;
}

async function probes(d: TestDaemon, name: string): Promise<ReturnType<typeof parseProbeLine>[]> {
  return (await d.json<{ serial: string[] }>(['vm', 'logs', name, '--lines', '3000'])).serial.map(parseProbeLine);
}
const lastHb = (ev: ReturnType<typeof parseProbeLine>[]): number =>
  Math.max(-1, ...ev.flatMap((e) => (e?.kind === 'heartbeat' ? [e.seq] : [])));
const lastUptime = (ev: ReturnType<typeof parseProbeLine>[]): number =>
  Math.max(-1, ...ev.flatMap((e) => (e?.kind === 'uptime' ? [e.uptimeS] : [])));

test('a running guest moves h1 -> h2 -> h1 with its memory and disk, and keeps running', async () => {
  await h1.json(['vm', 'create', 'mover', '--image', 'tiny', '--memory', '128M', '--host', 'h1', '--start', 'true']);
  const vm = await h1.json<Vm>(['vm', 'show', 'mover']);
  await waitFor('heartbeat on h1', async () => (lastHb(await probes(h1, 'mover')) > 50 ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 300,
  });
  const before = await probes(h1, 'mover');

  const t = await h1.json<Task<Mig>>(['vm', 'migrate', 'mover', '--to', 'h2']);
  assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
  assert.equal(t.result.from, 'h1');
  assert.equal(t.result.to, 'h2');
  assert.ok(t.result.downtimeMs >= 0);
  const moved = await h2.json<Vm>(['vm', 'show', 'mover']);
  assert.equal(moved.host, 'h2');
  assert.equal(moved.state, 'running');
  assert.deepEqual(
    (await qemus(vm.id)).map((q) => q.host),
    ['h2'],
    'exactly one QEMU, on the target',
  );

  // The guest's own clock and sequence continue on h2: the same guest, not a reboot.
  const after = await waitFor(
    'heartbeat on h2',
    async () => {
      const ev = await probes(h2, 'mover');
      return lastHb(ev) > lastHb(before) ? ev : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 300 },
  );
  assert.ok(!after.some((e) => e?.kind === 'ready'), 'no new boot on the target');
  assert.ok(lastUptime(after) >= lastUptime(before));

  const back = await h2.json<Task<Mig>>(['vm', 'migrate', 'mover', '--to', 'h1']);
  assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
  assert.equal((await h1.json<Vm>(['vm', 'show', 'mover'])).host, 'h1');
  assert.deepEqual(
    (await qemus(vm.id)).map((q) => q.host),
    ['h1'],
  );
  assert.deepEqual(await readdir(join(h2.dataDir, 'pools', 'default', 'vms')), [], 'the old side keeps no disk');

  // The disk came along: the counter on disk is at least the last one the guest printed.
  await sleep(500);
  const printed = (await probes(h1, 'mover')).flatMap((e) => (e?.kind === 'counter' ? [e.n] : []));
  await h1.json(['vm', 'stop', 'mover']);
  const vols = await h1.json<{ vmId: string; path: string }[]>(['volume', 'list']);
  const disk = vols.find((v) => v.vmId === vm.id)!;
  const onDisk = await readCounterFromImage(disk.path);
  assert.ok(
    onDisk !== null && printed.length > 0 && onDisk >= printed[printed.length - 1]!,
    `disk ${onDisk}, printed ${printed.at(-1)}`,
  );
  await h1.json(['vm', 'delete', 'mover']);
});

test('a cancelled migration leaves the VM running on its host and nothing on the target', async () => {
  await h1.json(['vm', 'create', 'stayer', '--image', 'tiny', '--memory', '256M', '--host', 'h1', '--start', 'true']);
  const vm = await h1.json<Vm>(['vm', 'show', 'stayer']);
  // 1 MiB/s makes 256 MiB of memory take minutes: plenty of time to cancel.
  const started = await h1.json<Task>(['vm', 'migrate', 'stayer', '--to', 'h2', '--bandwidth', '1M', '--no-wait']);
  await waitFor(
    'migration under way',
    async () => {
      const t = await h1.json<Task>(['task', 'show', started.id]);
      return t.log.some((l) => l.msg === 'moving memory') ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  await h1.json(['task', 'cancel', started.id]);
  const done = await h1.json<Task>(['task', 'wait', started.id]);
  assert.equal(done.state, 'cancelled');
  const still = await h1.json<Vm>(['vm', 'show', 'stayer']);
  assert.equal(still.host, 'h1');
  assert.equal(still.state, 'running');
  assert.deepEqual(
    (await qemus(vm.id)).map((q) => q.host),
    ['h1'],
  );
  assert.deepEqual(await readdir(join(h2.dataDir, 'pools', 'default', 'vms')), []);
  await h1.json(['vm', 'delete', 'stayer', '--force', 'true']);
});

test('migrating to the host it is on, or a stopped VM, is refused with a code', async () => {
  await h1.json(['vm', 'create', 'idle', '--image', 'tiny', '--memory', '128M', '--host', 'h1']);
  const stopped = await h1.cli(['vm', 'migrate', 'idle', '--to', 'h2']);
  assert.match(stopped.stderr, /FD_VM_NOT_RUNNING/);
  const nowhere = await h1.cli(['vm', 'migrate', 'idle', '--to', 'h1']);
  assert.equal(nowhere.code, 1);
  await h1.json(['vm', 'delete', 'idle']);
});
