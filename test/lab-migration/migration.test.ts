/**
 * Live migration across real network namespaces (the lab): three hosts with their own
 * daemons, a 3-member etcd and TLS between them. Evacuating a host moves its three running VMs
 * away; killing the target's processes in the middle of a migration leaves the VM running on
 * its source. After each: exactly one QEMU per VM across all hosts.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { Lab } from '../../src/lab/lab.js';
import type { CliResult } from '../helpers/daemon.js';
import { labCli, labJson, labQemuHosts } from '../helpers/lab.js';
import { waitFor } from '../../src/core/process.js';

const PREFIX = `lm${process.pid % 10000}`;
let lab: Lab;

const cli = (host: string, args: string[]): Promise<CliResult> => labCli(lab, host, args);
const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);

const qemuHosts = (id: string): Promise<string[]> => labQemuHosts(lab, id);

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
  error: { code: string } | null;
}

before(async () => {
  lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
  const r = await cli('h1', ['image', 'build', 'tiny', '--probes']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await Lab.destroy(PREFIX);
});

test('evacuating a host live-migrates its three running VMs to the others', async () => {
  const names = ['ev1', 'ev2', 'ev3'];
  for (const n of names)
    await json('h1', ['vm', 'create', n, '--image', 'tiny', '--memory', '128M', '--host', 'h1', '--start', 'true']);
  const ev = await json<Task>('h2', ['host', 'evacuate', 'h1']);
  assert.equal(ev.state, 'succeeded', JSON.stringify(ev.error));
  const hosts = await json<{ name: string; state: string }[]>('h3', ['host', 'list']);
  assert.equal(hosts.find((h) => h.name === 'h1')?.state, 'maintenance');
  for (const n of names) {
    const vm = await json<Vm>('h3', ['vm', 'show', n]);
    assert.notEqual(vm.host, 'h1');
    assert.equal(vm.state, 'running');
    assert.deepEqual(await qemuHosts(vm.id), [vm.host], `${n}: one QEMU, on its new host`);
  }
  const placed = await json<{ name: string; state: string }>('h1', [
    'vm',
    'create',
    'nothere',
    '--disk-size',
    '64M',
    '--network',
    'none',
  ]);
  assert.notEqual((placed as unknown as { result: Vm }).result.host, 'h1', 'placement skips a host in maintenance');
  await json('h1', ['host', 'activate', 'h1']);
  assert.equal(
    (await json<{ name: string; state: string }[]>('h2', ['host', 'list'])).find((h) => h.name === 'h1')?.state,
    'online',
  );
  for (const n of [...names, 'nothere']) await json('h2', ['vm', 'delete', n, '--force', 'true']);
});

test("killing the target's processes mid-migration leaves the VM running on its source", async () => {
  await json('h1', [
    'vm',
    'create',
    'victim',
    '--image',
    'tiny',
    '--memory',
    '256M',
    '--host',
    'h1',
    '--start',
    'true',
  ]);
  const vm = await json<Vm>('h1', ['vm', 'show', 'victim']);
  const started = await json<Task>('h1', ['vm', 'migrate', 'victim', '--to', 'h2', '--bandwidth', '2M', '--no-wait']);
  await waitFor(
    'memory transfer under way',
    async () =>
      (await json<Task>('h1', ['task', 'show', started.id])).log.some((l) => l.msg === 'moving memory')
        ? true
        : undefined,
    { timeoutMs: 90_000, intervalMs: 200 },
  );
  await lab.fail('h2', 'kill');
  const done = await json<Task>('h1', ['task', 'wait', started.id]);
  assert.equal(done.state, 'failed');
  const still = await json<Vm>('h1', ['vm', 'show', 'victim']);
  assert.equal(still.host, 'h1');
  assert.equal(still.state, 'running');
  assert.deepEqual(await qemuHosts(vm.id), ['h1']);
  await lab.heal('h2');
  await json('h1', ['vm', 'delete', 'victim', '--force', 'true']);
});

test("the source's daemon SIGKILLed mid-migration: after its restart the VM runs on the source only", async () => {
  await json('h1', [
    'vm',
    'create',
    'orphan',
    '--image',
    'tiny',
    '--memory',
    '256M',
    '--host',
    'h1',
    '--start',
    'true',
  ]);
  const vm = await json<Vm>('h1', ['vm', 'show', 'orphan']);
  const started = await json<Task>('h1', ['vm', 'migrate', 'orphan', '--to', 'h3', '--bandwidth', '2M', '--no-wait']);
  await waitFor(
    'memory transfer under way',
    async () =>
      (await json<Task>('h2', ['task', 'show', started.id])).log.some((l) => l.msg === 'moving memory')
        ? true
        : undefined,
    { timeoutMs: 90_000, intervalMs: 200 },
  );
  const h1 = lab.state.hosts.find((h) => h.name === 'h1')!;
  process.kill(Number((await readFile(`${h1.dataDir}/daemon.pid`, 'utf8')).trim()), 'SIGKILL');
  await lab.heal('h1');
  const back = await waitFor(
    'the VM running on h1 again',
    async () => {
      const v = await json<Vm>('h2', ['vm', 'show', 'orphan']);
      return v.host === 'h1' && v.state === 'running' && (await qemuHosts(vm.id)).join() === 'h1' ? v : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  assert.equal(back.host, 'h1');
  assert.notEqual((await json<Task>('h2', ['task', 'show', started.id])).state, 'running');
  const h3 = lab.state.hosts.find((h) => h.name === 'h3')!;
  assert.deepEqual(await readdir(`${h3.dataDir}/pools/default/vms`), [], 'the target removed its side');
  await json('h1', ['vm', 'delete', 'orphan', '--force', 'true']);
});
