import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpClient, type QmpEvent } from './qmp.js';
import { startTestQemu } from './testing.js';
import { isFdError } from '../core/errors.js';

test('QMP greeting, negotiation and a command round trip against a real QEMU', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    assert.equal(qmp.greeting?.version.qemu.major, 7);
    const v = await qmp.execute<{ qemu: { major: number } }>('query-version');
    assert.equal(v.qemu.major, 7);
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.equal(typeof status.status, 'string');
    await qmp.close();
    assert.equal(qmp.closed, true);
  } finally {
    await q.dispose();
  }
});

test('a refused command is FD_QMP_ERROR carrying QEMU class and desc', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    await assert.rejects(qmp.execute('no-such-command'), (e: unknown) => {
      assert.ok(isFdError(e, 'FD_QMP_ERROR'));
      const d = e.details as { class: string; desc: string };
      assert.equal(d.class, 'CommandNotFound');
      assert.match(d.desc, /no-such-command/);
      return true;
    });
    // the connection stays usable after an error
    assert.ok(await qmp.execute('query-version'));
    await qmp.close();
  } finally {
    await q.dispose();
  }
});

test('stop and cont arrive as STOP and RESUME events', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    const seen: string[] = [];
    qmp.on('event', (ev: QmpEvent) => seen.push(ev.event));
    const stopped = qmp.waitEvent('STOP', { timeoutMs: 5000 });
    await qmp.execute('stop');
    const ev = await stopped;
    assert.ok(ev.timestampUs > 1e15, 'event carries QEMU timestamp');
    assert.equal((await qmp.execute<{ status: string }>('query-status')).status, 'paused');
    const resumed = qmp.waitEvent('RESUME', { timeoutMs: 5000 });
    await qmp.execute('cont');
    await resumed;
    assert.deepEqual(seen, ['STOP', 'RESUME']);
    await qmp.close();
  } finally {
    await q.dispose();
  }
});

test('a command to a frozen QEMU times out alone; later commands still work', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    q.child.kill('SIGSTOP');
    await assert.rejects(qmp.execute('query-status', undefined, { timeoutMs: 200 }), (e) =>
      isFdError(e, 'FD_QMP_TIMEOUT'),
    );
    q.child.kill('SIGCONT');
    // the late reply to the timed-out command must not be taken as this one's
    const v = await qmp.execute<{ qemu: { major: number } }>('query-version');
    assert.equal(v.qemu.major, 7);
    await qmp.close();
  } finally {
    await q.dispose();
  }
});

test('QEMU going away fails pending commands with FD_QMP_CLOSED and emits close', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    const closed = new Promise<void>((r) => qmp.once('close', () => r()));
    q.child.kill('SIGSTOP');
    const pending = qmp.execute('query-status', undefined, { timeoutMs: 10_000 });
    q.child.kill('SIGKILL');
    await assert.rejects(pending, (e) => isFdError(e, 'FD_QMP_CLOSED'));
    await closed;
    await assert.rejects(qmp.execute('query-version'), (e) => isFdError(e, 'FD_QMP_CLOSED'));
  } finally {
    await q.dispose();
  }
});

test('quit ends QEMU and the client sees SHUTDOWN then close', async () => {
  const q = await startTestQemu();
  try {
    const qmp = await QmpClient.connect(q.qmpPath);
    const shutdown = qmp.waitEvent('SHUTDOWN', { timeoutMs: 5000 });
    const closed = new Promise<void>((r) => qmp.once('close', () => r()));
    await qmp.execute('quit');
    const ev = await shutdown;
    assert.equal(ev.data['reason'], 'host-qmp-quit');
    await closed;
  } finally {
    await q.dispose();
  }
});

test('connecting to a socket nobody serves is FD_QMP_CONNECT', async () => {
  await assert.rejects(QmpClient.connect('/nonexistent/qmp.sock', { timeoutMs: 500 }), (e) =>
    isFdError(e, 'FD_QMP_CONNECT'),
  );
});
