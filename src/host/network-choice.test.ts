import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { candidate, chooseDefaultNetwork, claimNetwork, hostAddressUse, overlaps } from './network-choice.js';

test('overlaps: prefixes that share an address, whatever their lengths', () => {
  assert.equal(overlaps('10.88.0.0/24', '10.88.0.0/24'), true);
  assert.equal(overlaps('10.88.0.0/16', '10.88.5.0/24'), true);
  assert.equal(overlaps('10.88.5.7', '10.88.5.0/24'), true);
  assert.equal(overlaps('10.88.1.0/24', '10.88.0.0/24'), false);
  assert.equal(overlaps('192.168.0.0/16', '10.88.0.0/24'), false);
});

test('the default network: a free bridge and subnet, claimed per data dir, a stale claim taken over', async () => {
  const root = await mkdtemp(join(tmpdir(), 'fd-netchoice-'));
  const saved = process.env.FLIGHTDECK_NET_CLAIMS;
  process.env.FLIGHTDECK_NET_CLAIMS = join(root, 'claims');
  try {
    const [a, b, c] = ['a', 'b', 'c'].map((n) => join(root, n));
    for (const d of [a, b, c]) await mkdir(d!);
    const use = await hostAddressUse();
    const first = await chooseDefaultNetwork(a!);
    // nothing on this machine has it (here the README daemon holds fdbr0 / 10.88.0.0/24)
    assert.equal(use.links.has(first.bridge), false, `${first.bridge} is not an existing interface`);
    assert.ok(!use.prefixes.some((p) => overlaps(p, first.cidr)), `${first.cidr} overlaps no route`);
    assert.match(first.bridge, /^fdbr\d+$/);
    assert.equal(first.cidr, candidate(Number(first.bridge.slice(4))).cidr);

    const second = await chooseDefaultNetwork(b!);
    assert.notEqual(second.bridge, first.bridge, 'a second data dir gets another bridge');
    assert.equal(overlaps(second.cidr, first.cidr), false, 'and another subnet');
    assert.equal(await claimNetwork(first, a!), true, 'a claim is its own data dir’s again');
    assert.equal(await claimNetwork(first, c!), false, 'and nobody else’s');

    await rm(a!, { recursive: true });
    assert.deepEqual(await chooseDefaultNetwork(c!), first, 'the claim of a deleted data dir is taken over');
    assert.equal((await readdir(join(root, 'claims'))).length, 2);
  } finally {
    if (saved === undefined) delete process.env.FLIGHTDECK_NET_CLAIMS;
    else process.env.FLIGHTDECK_NET_CLAIMS = saved;
    await rm(root, { recursive: true, force: true });
  }
});
