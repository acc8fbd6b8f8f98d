/**
 * Two daemons on one etcd (loopback, no namespaces): any host answers for any VM, placement
 * puts a VM where it fits and says why, calls about a VM run on its owner, and there is
 * exactly one leader, replaced when it goes.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import WebSocket from 'ws';
import { waitFor } from '../../src/core/process.js';

interface Host {
  name: string;
  state: string;
  leader: boolean;
}
interface Task {
  state: string;
  log: { msg: string }[];
  result: { host: string; id: string; state: string } | null;
  host: string;
}

let h1: TestDaemon;
let h2: TestDaemon;

before(async () => {
  h1 = await TestDaemon.start({ hostName: 'h1' });
  h2 = await TestDaemon.start({ hostName: 'h2', etcd: await h1.etcdUrl() });
});
after(async () => {
  await h2?.dispose();
  await h1?.dispose();
});

test('both hosts are listed online by either one, with exactly one leader', async () => {
  for (const d of [h1, h2]) {
    const hosts = await waitFor(
      'two hosts with a leader',
      async () => {
        const hs = await d.json<Host[]>(['host', 'list']);
        return hs.length === 2 && hs.filter((h) => h.leader).length === 1 ? hs : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 200 },
    );
    assert.deepEqual(
      hosts.map((h) => [h.name, h.state]),
      [
        ['h1', 'online'],
        ['h2', 'online'],
      ],
    );
  }
});

test('a VM pinned to h2 and created through h1 lives on h2; its calls through h1 run on h2', async () => {
  const created = await h1.json<Task>([
    'vm',
    'create',
    'far',
    '--disk-size',
    '64M',
    '--network',
    'none',
    '--host',
    'h2',
  ]);
  assert.equal(created.state, 'succeeded');
  assert.equal(created.result?.host, 'h2');
  assert.equal(created.host, 'h2', 'the create task ran on h2');
  assert.ok(
    created.log.some((l) => l.msg.startsWith('placement: placed on h2')),
    JSON.stringify(created.log),
  );
  const viaH2 = await h2.json<{ host: string }>(['vm', 'show', 'far']);
  assert.equal(viaH2.host, 'h2');
  const logs = await h1.cli(['vm', 'logs', 'far', '--json']);
  assert.equal(logs.code, 0, logs.stderr);
  const del = await h1.json<Task>(['vm', 'delete', 'far']);
  assert.equal(del.state, 'succeeded');
  assert.equal(del.host, 'h2');
});

test('the serial console of a VM on h2 is reachable through h1 (WebSocket relayed)', async () => {
  assert.equal((await h1.cli(['image', 'build', 'tiny', '--probes'])).code, 0);
  await h1.json(['vm', 'create', 'remote', '--image', 'tiny', '--memory', '128M', '--host', 'h2', '--start', 'true']);
  const vm = await h1.json<{ id: string; host: string; state: string }>(['vm', 'show', 'remote']);
  assert.equal(vm.host, 'h2');
  assert.equal(vm.state, 'running');
  const ws = new WebSocket(h1.url.replace('http', 'ws') + `/api/v1/vms/${vm.id}/console`, {
    headers: { authorization: `Bearer ${h1.token}` },
  });
  let text = '';
  ws.on('message', (b: Buffer) => (text += b.toString()));
  await waitFor('heartbeat through the relayed console', () => (/FD-HB \d+/.test(text) ? true : undefined), {
    timeoutMs: 60_000,
  });
  ws.close();
  // The VNC console with a browser's ticket, issued and redeemed on h1, relayed to h2.
  const t = await h1.api('POST', `/api/v1/vms/${vm.id}/console-ticket`);
  const ticket = (t.body as { ticket: string }).ticket;
  const vnc = new WebSocket(h1.url.replace('http', 'ws') + `/api/v1/vms/${vm.id}/vnc?ticket=${ticket}`);
  const hello = await new Promise<string>((resolve, reject) => {
    vnc.once('message', (b: Buffer) => resolve(b.toString('latin1')));
    vnc.once('error', reject);
  });
  assert.equal(hello.slice(0, 12), 'RFB 003.008\n');
  vnc.close();
  const stop = await h1.json<Task>(['vm', 'delete', 'remote', '--force', 'true']);
  assert.equal(stop.host, 'h2');
});

test('placement refuses a VM that fits on no host, naming each host and why', async () => {
  const r = await h1.cli(['vm', 'create', 'huge', '--disk-size', '64M', '--memory', '100000G']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FD_NO_HOST_WITH_ROOM/);
  assert.match(r.stderr, /h1: skipped/);
  assert.match(r.stderr, /h2: skipped/);
});

test('when the leader stops, the other host is elected', async () => {
  const leaderName = (await h1.json<Host[]>(['host', 'list'])).find((h) => h.leader)!.name;
  const [leader, other] = leaderName === 'h1' ? [h1, h2] : [h2, h1];
  await leader.stop();
  const hosts = await waitFor(
    'a new leader',
    async () => {
      const hs = await other.json<Host[]>(['host', 'list']);
      const l = hs.find((h) => h.leader);
      return l && l.name !== leaderName ? hs : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 200 },
  );
  assert.equal(hosts.find((h) => h.name === leaderName)?.state, 'lost');
  await leader.startProcess();
});
