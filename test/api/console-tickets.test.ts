/** Console tickets against a real etcd: single use, 30 s life, one VM, racing uses. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { ConsoleTickets, TICKET_TTL_MS } from '../../src/api/console-tickets.js';
import { isFdError } from '../../src/core/errors.js';

let etcd: TestEtcd;
before(async () => {
  etcd = await startTestEtcd();
});
after(async () => {
  await etcd?.dispose();
});

const VM = '7c1b7d0e-6f39-4b8e-9f1a-2a8f3c4d5e6f';
const OTHER = '11111111-2222-4333-8444-555555555555';

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (isFdError(err)) return err.code;
    throw err;
  }
};

test('a ticket works once, for its VM, within its life', async () => {
  let now = 1_000_000;
  const tickets = new ConsoleTickets(etcd.store('/t1/'), () => now);
  const a = await tickets.issue(VM, 'ann');
  assert.match(a.ticket, /^fdt_/);
  assert.equal(await code(tickets.redeem(a.ticket, OTHER)), 'FD_TICKET_WRONG_VM');
  assert.deepEqual(await tickets.redeem(a.ticket, VM), { caller: 'ann' });
  assert.equal(await code(tickets.redeem(a.ticket, VM)), 'FD_TICKET_USED');

  const b = await tickets.issue(VM, 'ann');
  now += TICKET_TTL_MS + 1;
  assert.equal(await code(tickets.redeem(b.ticket, VM)), 'FD_TICKET_EXPIRED');
  assert.equal(await code(tickets.redeem('fdt_' + 'x'.repeat(32), VM)), 'FD_TICKET_INVALID');
  assert.equal(await code(tickets.redeem('not a ticket', VM)), 'FD_TICKET_INVALID');
});

test('two connections racing with one ticket: exactly one wins', async () => {
  const tickets = new ConsoleTickets(etcd.store('/t2/'));
  const { ticket } = await tickets.issue(VM, 'bob');
  const results = await Promise.all(Array.from({ length: 8 }, () => code(tickets.redeem(ticket, VM))));
  assert.equal(results.filter((r) => r === 'ok').length, 1, results.join(','));
  assert.ok(
    results.every((r) => r === 'ok' || r === 'FD_TICKET_USED'),
    results.join(','),
  );
});

test('old tickets are swept when new ones are issued', async () => {
  let now = 5_000_000;
  const store = etcd.store('/t3/');
  const tickets = new ConsoleTickets(store, () => now);
  await tickets.issue(VM, 'c');
  now += TICKET_TTL_MS + 61_000;
  await tickets.issue(VM, 'c');
  assert.equal(await store.count('console-tickets/'), 1);
});
