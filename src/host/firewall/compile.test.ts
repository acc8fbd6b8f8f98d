import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run } from '../../core/process.js';
import { linkLocalFromMac, parseCidr } from './addresses.js';
import { compile } from './compile.js';
import { HostFirewall } from './engine.js';
import { checkState, parsePeer, parsePortRange, type FirewallState } from './model.js';

function sample(): FirewallState {
  return {
    groups: [
      {
        name: 'web',
        rules: [
          { id: 'http', direction: 'in', action: 'accept', proto: 'tcp', ports: { from: 80, to: 90 } },
          { id: 'fromdb', direction: 'in', action: 'accept', proto: 'any', peer: { kind: 'group', group: 'db' } },
          { id: 'nossh', direction: 'in', action: 'reject', proto: 'tcp', ports: { from: 22, to: 22 }, log: true },
        ],
      },
      {
        name: 'db',
        rules: [
          { id: 'pg', direction: 'out', action: 'drop', proto: 'udp', peer: { kind: 'cidr', cidr: '2001:db8::/32' } },
        ],
      },
    ],
    groupMembers: { db: ['10.9.0.7', 'fd00::7'], web: [] },
    networks: { lan: ['10.9.0.0/24'] },
    nics: [
      {
        vm: 'a',
        nic: 'lan',
        tap: 'fdtaaaa',
        bridge: 'fdbrx',
        mac: '52:54:00:00:00:01',
        addresses: ['10.9.0.5', 'fd00::5'],
        groups: ['web'],
        rules: [
          { id: 'ping', direction: 'in', action: 'accept', proto: 'icmp', peer: { kind: 'network', network: 'lan' } },
        ],
        defaultIn: 'drop',
        defaultOut: 'accept',
        antiSpoof: true,
        logDrops: true,
      },
      {
        vm: 'b',
        nic: 'lan',
        tap: 'fdtbbbb',
        bridge: 'fdbrx',
        mac: '52:54:00:00:00:02',
        addresses: [],
        groups: ['db'],
        rules: [],
        defaultIn: 'reject',
        defaultOut: 'drop',
        antiSpoof: true,
        logDrops: false,
      },
    ],
    protectedAddresses: ['10.9.0.1'],
  };
}

test('addresses are normalized and the EUI-64 link-local follows the MAC', () => {
  assert.equal(parseCidr('2001:0db8:0:0::1').text, '2001:db8::1');
  assert.equal(parseCidr('10.1.2.3/8').text, '10.0.0.0/8');
  assert.equal(linkLocalFromMac('52:54:00:12:34:56'), 'fe80::5054:ff:fe12:3456');
  assert.throws(() => parseCidr('10.1.2.300'), { code: 'FD_FW_BAD_ADDRESS' });
  assert.throws(() => parseCidr('fe80::1%eth0'), { code: 'FD_FW_BAD_ADDRESS' });
  assert.deepEqual(parsePortRange('80-90'), { from: 80, to: 90 });
  assert.throws(() => parsePortRange('90-80'), { code: 'FD_FW_BAD_RULE' });
  assert.deepEqual(parsePeer('@web'), { kind: 'group', group: 'web' });
});

test('bad states are refused with a stable code', () => {
  const unknownGroup = sample();
  unknownGroup.groups[0]!.rules.push({
    id: 'x',
    direction: 'in',
    action: 'accept',
    proto: 'any',
    peer: { kind: 'group', group: 'nope' },
  });
  assert.throws(() => checkState(unknownGroup), { code: 'FD_FW_UNKNOWN_GROUP' });
  const unknownNicGroup = sample();
  unknownNicGroup.nics[0]!.groups.push('nope');
  assert.throws(() => checkState(unknownNicGroup), { code: 'FD_FW_UNKNOWN_GROUP' });
  const hostAddress = sample();
  hostAddress.nics[1]!.addresses = ['10.9.0.1'];
  assert.throws(() => checkState(hostAddress), { code: 'FD_FW_CUTS_HOST' });
  const udpPortOnIcmp = sample();
  udpPortOnIcmp.nics[0]!.rules.push({
    id: 'p',
    direction: 'in',
    action: 'drop',
    proto: 'icmp',
    ports: { from: 1, to: 2 },
  });
  assert.throws(() => checkState(udpPortOnIcmp), { code: 'FD_FW_BAD_RULE' });
  const quote = sample();
  quote.nics[0]!.rules[0]!.comment = 'a" drop';
  assert.throws(() => checkState(quote), { code: 'FD_FW_BAD_RULE' });
  checkState(sample());
});

test("the compiled tables pass nftables' own check, and host traffic has no match that could catch it", async () => {
  const c = compile(sample(), 'fdfw_check');
  const r = await run('nft', ['-c', '-f', '-'], { input: c.body, allowFail: true });
  assert.equal(r.code, 0, `nft -c: ${r.stderr}`);
  // every dispatch keys on our marks (set only for our taps) or on a NIC's own address
  for (const line of c.body.split('\n').filter((l) => l.includes('vmap')))
    assert.match(line, /meta mark|ip6? daddr|[io]ifname/, line);
  assert.ok(c.counters.some((x) => x.name === 'fdtaaaa.g.web.http'));
  assert.ok(c.counters.some((x) => x.name === 'fdtbbbb.spoof' && x.table === 'bridge'));
});

test('apply is one transaction: a refused state changes nothing, counters survive a change', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-fw-'));
  const table = `fdfwt_${randomBytes(3).toString('hex')}`;
  const br = `fdfb${randomBytes(3).toString('hex')}`;
  const fw = new HostFirewall({ stateDir: dir, table });
  try {
    await run('ip', ['link', 'add', br, 'type', 'bridge']);
    const s = sample();
    for (const n of s.nics) n.bridge = br;
    await fw.apply(s);
    const before = (await run('nft', ['list', 'table', 'inet', table])).stdout;
    assert.match(before, /fdtaaaa\.g\.web\.http/);
    const bad = sample();
    bad.nics[0]!.groups = ['missing'];
    await assert.rejects(fw.apply(bad), { code: 'FD_FW_UNKNOWN_GROUP' });
    assert.equal(
      (await run('nft', ['list', 'table', 'inet', table])).stdout,
      before,
      'refused state left the rules alone',
    );
    // a counter with packets keeps them when other rules change
    await run('nft', ['reset', 'counter', 'inet', table, 'fdtaaaa.default-in']);
    const one = sample();
    one.nics = [one.nics[0]!];
    one.nics[0]!.bridge = br;
    one.nics[0]!.rules = [];
    await fw.apply(one);
    const chains = (await run('nft', ['list', 'table', 'inet', table])).stdout;
    assert.doesNotMatch(chains, /chain n2_in/, "the removed NIC's chains are gone");
    const counters = await fw.counters();
    assert.deepEqual(
      counters.map((x) => x.tap),
      ['fdtaaaa'],
    );
    assert.ok(!counters[0]!.rules.some((r) => r.ruleId === 'ping'), 'the removed rule has no counter');
    const ip = (await run('ip', ['-d', 'link', 'show', br])).stdout;
    assert.match(ip, /nf_call_iptables 1/);
  } finally {
    await fw.clear();
    await run('ip', ['link', 'del', br], { allowFail: true });
    await rm(dir, { recursive: true, force: true });
  }
});
