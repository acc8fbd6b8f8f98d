/**
 * Faults during a live migration in the lab (three hosts, a 3-member etcd): the link to the
 * target cut in the middle, and the cluster's leader restarted in the middle. After each:
 * exactly one QEMU for the VM across the hosts, nothing of the VM left on a host that does
 * not own it, and the guest's durable counter on its disk at least the last value it printed
 * (every write it acknowledged is on the disk it runs from).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Lab } from '../../src/lab/lab.js';
import { pidsMentioning } from '../../src/lab/procs.js';
import { labJson, labQemuHosts } from '../helpers/lab.js';
import { waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';
import { readCounterFromImage } from '../../src/host/images/vhd.js';

const PREFIX = `lf${process.pid % 10000}`;
let lab: Lab;

const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);

interface Vm {
  id: string;
  name: string;
  host: string;
  state: string;
}
interface Task {
  id: string;
  state: string;
  log: { msg: string }[];
  error: { code: string; message: string } | null;
}
interface HostRow {
  name: string;
  state: string;
  leader: boolean;
}

const qemuHosts = (id: string): Promise<string[]> => labQemuHosts(lab, id);

/** What host `name` still holds of VM `id`: processes, run dir, disk dir. */
async function leftovers(name: string, id: string): Promise<string[]> {
  const h = lab.state.hosts.find((x) => x.name === name)!;
  const left: string[] = [];
  for (const pid of await pidsMentioning(`${h.dataDir}/run/${id}`)) left.push(`process ${pid}`);
  if (existsSync(`${h.dataDir}/run/${id}`)) left.push('run dir');
  if (existsSync(`${h.dataDir}/pools/default/vms/${id}`)) left.push('disk dir');
  return left;
}

/** Counter values the guest printed (each only after it was on disk). */
async function printedCounters(host: string, name: string): Promise<bigint[]> {
  const logs = await json<{ serial: string[] }>(host, ['vm', 'logs', name, '--lines', '5000']);
  return logs.serial.map(parseProbeLine).flatMap((e) => (e?.kind === 'counter' ? [e.n] : []));
}

/** Stops the VM on its owner and checks the counter on its disk against what it printed last. */
async function assertDiskKeptWrites(name: string): Promise<void> {
  const vm = await json<Vm>('h1', ['vm', 'show', name]);
  const printed = await printedCounters(vm.host, name);
  await json(vm.host, ['vm', 'stop', name]);
  const vols = await json<{ vmId: string; path: string }[]>(vm.host, ['volume', 'list']);
  const disk = vols.find((v) => v.vmId === vm.id)!;
  const onDisk = await readCounterFromImage(disk.path);
  assert.ok(printed.length > 0, 'the guest printed counters');
  assert.ok(onDisk !== null && onDisk >= printed.at(-1)!, `counter on disk ${onDisk}, last printed ${printed.at(-1)}`);
}

async function createRunning(name: string, host: string): Promise<Vm> {
  await json(host, ['vm', 'create', name, '--image', 'tiny', '--memory', '256M', '--host', host, '--start', 'true']);
  const vm = await json<Vm>(host, ['vm', 'show', name]);
  await waitFor(
    'guest counter on disk',
    async () => ((await printedCounters(host, name)).length > 5 ? true : undefined),
    { timeoutMs: 90_000, intervalMs: 500 },
  );
  return vm;
}

async function memoryMoving(via: string, taskId: string): Promise<void> {
  await waitFor(
    'memory transfer under way',
    async () =>
      (await json<Task>(via, ['task', 'show', taskId])).log.some((l) => l.msg === 'moving memory') ? true : undefined,
    { timeoutMs: 90_000, intervalMs: 200 },
  );
}

before(async () => {
  lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
  await json('h1', ['image', 'build', 'tiny', '--probes']);
});
after(async () => {
  await Lab.destroy(PREFIX);
});

test('cutting the link to the target midway: the task fails as stalled, the VM runs on its source, the target is cleaned after heal', async () => {
  const vm = await createRunning('cut', 'h1');
  // 2 MB/s keeps the memory moving for a minute: the cut lands in the middle.
  const started = await json<Task>('h1', [
    'vm',
    'migrate',
    'cut',
    '--to',
    'h2',
    '--bandwidth',
    '2M',
    '--stall-timeout',
    '5s',
    '--no-wait',
  ]);
  await memoryMoving('h1', started.id);
  const beforeCut = (await printedCounters('h1', 'cut')).at(-1)!;
  await lab.fail('h2', 'partition');
  let healed = false;
  try {
    const done = await json<Task>('h1', ['task', 'wait', started.id]);
    assert.equal(done.state, 'failed');
    assert.equal(done.error?.code, 'FD_MIGRATION_STALLED', done.error?.message);
    const still = await json<Vm>('h1', ['vm', 'show', 'cut']);
    assert.deepEqual([still.host, still.state], ['h1', 'running']);
    // The guest's disk writes go on (they waited on the target's copy; that wait was ended).
    await waitFor(
      'the guest writing its disk again',
      async () => ((await printedCounters('h1', 'cut')).at(-1)! > beforeCut + 5n ? true : undefined),
      { timeoutMs: 30_000, intervalMs: 500 },
    );
    await lab.heal('h2');
    healed = true;
  } finally {
    if (!healed) await lab.heal('h2');
  }
  // The source keeps asking the target to remove its side until the target answers.
  await waitFor(
    'the target holds nothing of the VM',
    async () => ((await leftovers('h2', vm.id)).length === 0 ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 1000 },
  ).catch(async (err: unknown) => {
    assert.fail(`${String(err)}: h2 still has ${(await leftovers('h2', vm.id)).join(', ')}`);
  });
  assert.deepEqual(await qemuHosts(vm.id), ['h1'], 'exactly one QEMU, on the source');
  assert.equal((await json<Vm>('h3', ['vm', 'show', 'cut'])).host, 'h1');
  await assertDiskKeptWrites('cut');
  await json('h1', ['vm', 'delete', 'cut', '--force', 'true']);
});

test('restarting the leader during a migration between two other hosts: the move completes, one QEMU', async () => {
  await lab.waitHostStates('h1', { online: ['h1', 'h2', 'h3'] }, 60_000);
  const hosts = await json<HostRow[]>('h1', ['host', 'list']);
  const leader = hosts.find((h) => h.leader)?.name;
  assert.ok(leader, `a leader among ${JSON.stringify(hosts)}`);
  const [from, to] = ['h1', 'h2', 'h3'].filter((h) => h !== leader) as [string, string];
  const vm = await createRunning('lead', from);
  const started = await json<Task>(from, ['vm', 'migrate', 'lead', '--to', to, '--bandwidth', '4M', '--no-wait']);
  await memoryMoving(from, started.id);
  const r = await lab.restartDaemon(leader);
  assert.notEqual(r.pid, r.oldPid);
  const done = await json<Task>(from, ['task', 'wait', started.id]);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const moved = await json<Vm>(leader, ['vm', 'show', 'lead']);
  assert.deepEqual([moved.host, moved.state], [to, 'running']);
  assert.deepEqual(await qemuHosts(vm.id), [to], 'exactly one QEMU, on the target');
  assert.deepEqual(await leftovers(from, vm.id), [], 'the source keeps nothing');
  // A leader is elected again (the restarted host or another).
  await waitFor(
    'a leader',
    async () => ((await json<HostRow[]>(to, ['host', 'list'])).some((h) => h.leader) ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  await assertDiskKeptWrites('lead');
  await json(to, ['vm', 'delete', 'lead', '--force', 'true']);
});

test('the leader is the source and its daemon restarts mid-migration: one copy runs afterwards, disk intact', async () => {
  await lab.waitHostStates('h1', { online: ['h1', 'h2', 'h3'] }, 60_000);
  const hosts = await json<HostRow[]>('h1', ['host', 'list']);
  const leader = hosts.find((h) => h.leader)!.name;
  const to = ['h1', 'h2', 'h3'].find((h) => h !== leader)!;
  const other = ['h1', 'h2', 'h3'].find((h) => h !== leader && h !== to)!;
  const vm = await createRunning('lsrc', leader);
  const started = await json<Task>(leader, ['vm', 'migrate', 'lsrc', '--to', to, '--bandwidth', '4M', '--no-wait']);
  await memoryMoving(leader, started.id);
  await lab.restartDaemon(leader);
  // The restarted source completes the move or undoes it; either way one copy, where the record says.
  const settled = await waitFor(
    'one QEMU, on the owner, running',
    async () => {
      const v = await json<Vm>(other, ['vm', 'show', 'lsrc']);
      const q = await qemuHosts(vm.id);
      return v.state === 'running' && q.length === 1 && q[0] === v.host ? v : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  const gone = settled.host === leader ? to : leader;
  await waitFor(
    `nothing of the VM left on ${gone}`,
    async () => ((await leftovers(gone, vm.id)).length === 0 ? true : undefined),
    { timeoutMs: 60_000, intervalMs: 1000 },
  );
  assert.notEqual((await json<Task>(other, ['task', 'show', started.id])).state, 'running');
  await assertDiskKeptWrites('lsrc');
  await json(other, ['vm', 'delete', 'lsrc', '--force', 'true']);
});
