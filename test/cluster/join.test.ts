/**
 * From one host to a cluster: `cluster init` makes the private etcd a member reachable on an
 * advertised address, `cluster join` on a new host admits it as a second etcd member and
 * writes cluster.json, and the new host's daemon then shares the state of the first.
 * Loopback addresses 127.0.0.2/.3 stand in for two machines' addresses.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../../src/core/process.js';

const started: TestDaemon[] = [];
after(async () => {
  for (const d of started) d.kill();
  for (const d of started) await d.dispose();
});

test('init, join as an etcd member, and both hosts share one state', async () => {
  const h1 = await TestDaemon.start({ hostName: 'h1' });
  started.push(h1);
  const init = await h1.json<{ advertise: string; etcd: string[] }>(['cluster', 'init', '--advertise', '127.0.0.2']);
  assert.equal(init.advertise, '127.0.0.2');
  assert.match(init.etcd[0]!, /^http:\/\/127\.0\.0\.2:\d+$/);
  await h1.stop();
  await h1.startProcess();

  const dir2 = await mkdtemp(join(tmpdir(), 'fd-e2e-'));
  const h2 = new TestDaemon(dir2, { hostName: 'h2' });
  started.push(h2);
  const joined = await h2.json<{ member: boolean; etcd: string[] }>([
    'cluster',
    'join',
    h1.url,
    '--token',
    h1.token,
    '--advertise',
    '127.0.0.3',
    '--host-name',
    'h2',
  ]);
  assert.equal(joined.member, true);
  await h2.startProcess();

  const shown = await waitFor(
    'two members and two hosts online',
    async () => {
      const c = await h2.json<{
        members: { name: string }[];
        hosts: { name: string; state: string }[];
        leader: string | null;
      }>(['cluster', 'show']);
      return c.members.length === 2 && c.hosts.filter((h) => h.state === 'online').length === 2 && c.leader
        ? c
        : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 300 },
  );
  assert.deepEqual(shown.members.map((m) => m.name).sort(), ['flightdeck', 'h2']);
  await h1.json(['vm', 'create', 'shared', '--disk-size', '64M', '--network', 'none', '--host', 'h1']);
  assert.equal((await h2.json<{ host: string }>(['vm', 'show', 'shared'])).host, 'h1');

  const badJoin = await h2.cli([
    'cluster',
    'join',
    h1.url,
    '--token',
    'fd_000000000000_nopenopenopenopenopenope',
    '--advertise',
    '127.0.0.4',
    '--data-dir',
    dir2 + '-x',
  ]);
  assert.equal(badJoin.code, 1);
  assert.match(badJoin.stderr, /FD_UNAUTHORIZED/);
});
