import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ProtectionRecord } from '../state/model.js';
import { vmRecord } from '../state/testing.js';
import { cannotFailOver, failoverOrder } from './failover.js';

const prot = (over: Partial<ProtectionRecord>): ProtectionRecord => ({
  vmId: 'x',
  requestedStandby: null,
  primary: 'h1',
  standby: 'h2',
  state: 'protected',
  progress: null,
  lastError: null,
  since: '',
  updatedAt: '',
  ...over,
});

test("a lost host's VM fails over only from a copy in sync on a live standby", () => {
  const alive = new Set(['h2', 'h3']);
  assert.equal(cannotFailOver(prot({}), alive), undefined);
  assert.match(cannotFailOver(undefined, alive)!, /only on the lost host/);
  assert.match(cannotFailOver(prot({ state: 'syncing' }), alive)!, /would lose writes/);
  assert.match(cannotFailOver(prot({ state: 'degraded' }), alive)!, /would lose writes/);
  assert.match(cannotFailOver(prot({ standby: 'h4' }), alive)!, /not available/);
  assert.match(cannotFailOver(prot({ standby: null }), alive)!, /not available/);
});

test('failover order: running HA or protected VMs, highest priority first', () => {
  const ha = (p: number) => ({ enabled: true, priority: p, maxRestarts: 3 });
  const low = vmRecord({ desired: 'running', ha: ha(1) });
  const high = vmRecord({ desired: 'running', ha: ha(9) });
  const protectedOnly = vmRecord({ desired: 'running' });
  const plain = vmRecord({ desired: 'running' });
  const stopped = vmRecord({ desired: 'stopped', ha: ha(5) });
  const order = failoverOrder([low, plain, stopped, protectedOnly, high], (id) => id === protectedOnly.id);
  assert.deepEqual(
    order.map((v) => v.id),
    [high.id, low.id, protectedOnly.id],
  );
});
