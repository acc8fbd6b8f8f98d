import { test } from 'node:test';
import assert from 'node:assert/strict';
import { place, type PlacedVm, type PlacementHost } from './placement.js';
import { isFdError } from '../../core/errors.js';

const GiB = 1024 ** 3;
const hosts: PlacementHost[] = [
  { name: 'a', state: 'online', cpus: 2, memoryBytes: 4 * GiB },
  { name: 'b', state: 'online', cpus: 2, memoryBytes: 4 * GiB },
  { name: 'c', state: 'maintenance', cpus: 8, memoryBytes: 64 * GiB },
];
const vm = (id: string, host: string, memGiB: number, extra: Partial<PlacedVm> = {}): PlacedVm => ({
  id,
  host,
  cpus: 1,
  memoryBytes: memGiB * GiB,
  antiAffinity: null,
  desired: 'running',
  ...extra,
});

test('placement picks the online host with the most memory left and says why', () => {
  const d = place({ cpus: 1, memoryBytes: GiB }, hosts, [vm('1', 'a', 2)]);
  assert.equal(d.host, 'b');
  assert.ok(
    d.reasons.some((r) => r.startsWith('c: skipped, maintenance')),
    d.reasons.join('\n'),
  );
});

test('stopped VMs hold no capacity; a VM that fits nowhere is FD_NO_HOST_WITH_ROOM with every reason', () => {
  assert.equal(
    place({ cpus: 1, memoryBytes: 3 * GiB }, hosts, [vm('1', 'a', 3, { desired: 'stopped' }), vm('2', 'b', 1)]).host,
    'a',
  );
  assert.throws(
    () => place({ cpus: 1, memoryBytes: 3.5 * GiB }, hosts, [vm('1', 'a', 1), vm('2', 'b', 1)]),
    (e) => isFdError(e, 'FD_NO_HOST_WITH_ROOM') && /a: skipped/.test(e.message) && /b: skipped/.test(e.message),
  );
});

test('anti-affinity keeps two VMs of one group apart; pinning overrides the choice', () => {
  const d = place({ cpus: 1, memoryBytes: GiB, antiAffinity: 'db' }, hosts, [
    vm('1', 'b', 0.5, { antiAffinity: 'db' }),
  ]);
  assert.equal(d.host, 'a');
  assert.equal(place({ cpus: 1, memoryBytes: GiB, pinnedHost: 'a' }, hosts, [vm('1', 'a', 2)]).host, 'a');
  assert.throws(
    () => place({ cpus: 1, memoryBytes: GiB, pinnedHost: 'zz' }, hosts, []),
    (e) => isFdError(e, 'FD_HOST_NOT_FOUND'),
  );
  assert.throws(
    () => place({ cpus: 1, memoryBytes: GiB, pinnedHost: 'c' }, hosts, []),
    (e) => isFdError(e, 'FD_NO_HOST_WITH_ROOM'),
  );
});

test('vCPU overcommit limit and migration exclusion are honoured', () => {
  const busy = Array.from({ length: 16 }, (_, i) => vm(`x${i}`, 'a', 0.01));
  assert.equal(place({ cpus: 1, memoryBytes: GiB }, hosts, busy).host, 'b');
  assert.equal(place({ cpus: 1, memoryBytes: GiB, exclude: ['b'] }, hosts, []).host, 'a');
});
