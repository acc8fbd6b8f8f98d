/**
 * The audit log against a real daemon: calls that change something (accepted or refused, with
 * a valid token or not) are recorded with who, from where, what and how it ended; reads are
 * not; `audit list` filters by VM, token and time; tasks say who started them; the daemon log
 * has every record as a JSON line; and the store keeps records within the retention limit.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { silentLogger } from '../../src/core/log.js';
import { Store } from '../../src/cluster/state/store.js';
import { AuditLog, type AuditEntry } from '../../src/cluster/state/audit.js';

type Row = AuditEntry & { targetText: string; resultText: string };
interface Task {
  id: string;
  startedBy?: { tokenId: string; tokenName: string; role: string };
}

let d: TestDaemon;
let ops: { token: string; info: { id: string } };
let viewer: string;

before(async () => {
  d = await TestDaemon.start();
  ops = await d.json(['token', 'create', 'ops', '--role', 'operator']);
  viewer = (await d.json<{ token: string }>(['token', 'create', 'watcher', '--role', 'viewer'])).token;
});
after(async () => {
  await d?.dispose();
});

const list = (args: string[] = []): Promise<Row[]> => d.json<Row[]>(['audit', 'list', ...args]);

test('changes are recorded with token, role, source, operation, target and result; reads are not', async () => {
  const created = await d.api(
    'POST',
    '/api/v1/vms?wait=true',
    { name: 'aud1', memory: '64M', diskSize: '16M' },
    ops.token,
  );
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const task = created.body as Task;
  assert.deepEqual(
    task.startedBy,
    { tokenId: ops.info.id, tokenName: 'ops', role: 'operator' },
    'task records its starter',
  );
  await d.api('GET', '/api/v1/vms', undefined, ops.token);
  const refused = await d.api('DELETE', '/api/v1/vms/aud1', undefined, viewer);
  assert.equal(refused.status, 403);
  const bogus = await d.api('DELETE', '/api/v1/vms/aud1', undefined, 'fd_0123456789ab_notavalidsecretatall00');
  assert.equal(bogus.status, 401);
  await d.json(['token', 'revoke', 'watcher']);

  const rows = await list();
  const create = rows.find((r) => r.operation === 'vm.create');
  assert.ok(create, JSON.stringify(rows.map((r) => r.operation)));
  assert.equal(create.tokenName, 'ops');
  assert.equal(create.tokenId, ops.info.id);
  assert.equal(create.role, 'operator');
  assert.match(create.source, /127\.0\.0\.1/);
  assert.equal(create.target?.kind, 'vm');
  assert.equal(create.target?.name, 'aud1');
  assert.equal(create.result.status, 200);
  assert.equal(create.result.task, task.id);
  const denied = rows.find((r) => r.operation === 'vm.delete' && r.result.status === 403);
  assert.equal(denied?.result.code, 'FD_FORBIDDEN');
  assert.equal(denied?.tokenName, 'watcher');
  assert.equal(denied?.target?.ref, 'aud1');
  const unknown = rows.find((r) => r.operation === 'vm.delete' && r.result.status === 401);
  assert.equal(unknown?.tokenId, '0123456789ab', 'a refused token is named by its id');
  assert.equal(unknown?.result.code, 'FD_UNAUTHORIZED');
  assert.ok(rows.some((r) => r.operation === 'token.revoke' && r.tokenName === 'local-admin'));
  assert.ok(!rows.some((r) => r.operation === 'vm.list' || r.operation.startsWith('GET ')), 'reads are not audited');
  assert.ok(rows.some((r) => r.operation === 'token.create' && r.target?.kind === 'token'));
  // Every record is a JSON line of the daemon's log too.
  const line = d.log.split('\n').find((l) => l.includes('"audit"') && l.includes('"vm.create"'));
  assert.ok(line, 'audit line in the daemon log');
  assert.equal((JSON.parse(line) as { audit: AuditEntry }).audit.tokenName, 'ops');
});

test('audit list filters by VM, token and time; only an admin reads it', async () => {
  await d.api('POST', '/api/v1/vms?wait=true', { name: 'aud2', memory: '64M', diskSize: '16M' }, ops.token);
  await d.json(['vm', 'delete', 'aud2']);
  const aud2 = await list(['--vm', 'aud2']);
  assert.deepEqual(
    aud2.map((r) => r.operation),
    ['vm.delete', 'vm.create'],
    'newest first, only aud2 (found by name after its deletion too)',
  );
  const byOps = await list(['--token', 'ops']);
  assert.ok(byOps.length >= 2 && byOps.every((r) => r.tokenName === 'ops'));
  assert.ok((await list(['--since', '1h'])).length >= aud2.length);
  assert.deepEqual(await list(['--since', new Date(Date.now() + 60_000).toISOString()]), []);
  const bad = await d.cli(['audit', 'list', '--since', 'yesterday']);
  assert.match(bad.stderr, /FD_BAD_SINCE/);
  const asOps = await d.api('GET', '/api/v1/audit', undefined, ops.token);
  assert.equal(asOps.status, 403);
  const table = await d.cli(['audit', 'list', '--vm', 'aud2']);
  assert.match(table.stdout, /vm\.delete\s+vm aud2/);
});

test('the store keeps audit records within the retention limit (oldest go first)', async () => {
  const store = new Store([await d.etcdUrl()], '/fdtest-audit/');
  try {
    const log = new AuditLog(store, 't', silentLogger, { maxAgeMs: 86_400_000, maxEntries: 3 });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(
        (
          await log.record({
            tokenId: null,
            tokenName: `n${i}`,
            role: null,
            source: 'x',
            operation: 'op',
            target: null,
            result: { status: 200 },
          })
        ).id,
      );
    }
    assert.equal(await log.prune(), 2);
    assert.deepEqual(
      (await log.list()).map((e) => e.tokenName),
      ['n4', 'n3', 'n2'],
    );
    const aged = new AuditLog(store, 't', silentLogger, { maxAgeMs: 0, maxEntries: 100 });
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(await aged.prune(), 3, 'older than the age limit');
  } finally {
    store.close();
  }
});
