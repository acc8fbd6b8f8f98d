import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { run } from '../core/process.js';
import { isFdError } from '../core/errors.js';
import { parseVmSpec } from '../qemu/spec.js';
import { HostNetworks, NFT_TABLE, parseSubnet, withUserModeFallback } from './network.js';
import { linkExists } from './tap.js';
import { identify } from './pidfile.js';

test('subnets: gateway is the first host, DHCP gets the upper half; bad ones are FD_NET_BAD_SUBNET', () => {
  const s = parseSubnet('10.88.0.0/24');
  assert.equal(s.gateway, '10.88.0.1');
  assert.equal(s.rangeStart, '10.88.0.128');
  assert.equal(s.rangeEnd, '10.88.0.254');
  for (const bad of ['10.88.0.0', '10.88.0.0/8', '300.1.1.1/24', 'x/24'])
    assert.throws(
      () => parseSubnet(bad),
      (e) => isFdError(e, 'FD_NET_BAD_SUBNET'),
      bad,
    );
});

test('a managed bridge gets its address, NAT rules and a dnsmasq; ensure is idempotent; remove leaves nothing', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-net-'));
  const tag = randomBytes(3).toString('hex');
  const bridge = `fdtn${tag}`;
  const subnet = `10.${200 + (randomBytes(1)[0]! % 50)}.${randomBytes(1)[0]!}.0/24`;
  const nets = new HostNetworks({ dataDir });
  try {
    const st = await nets.ensure({ name: `t-${tag}`, bridge, subnet });
    assert.equal(st.bridgeUp, true);
    assert.equal(st.natRules, 3);
    assert.ok(st.dnsmasqPid && identify(st.dnsmasqPid), 'dnsmasq runs');
    const addr = (await run('ip', ['-4', '-o', 'addr', 'show', 'dev', bridge])).stdout;
    assert.match(addr, new RegExp(`inet ${st.gateway.replace(/\./g, '\\.')}/24`));
    const nft = (await run('nft', ['list', 'table', 'ip', NFT_TABLE])).stdout;
    assert.match(nft, new RegExp(`masquerade comment "fd-net:t-${tag}"`));
    assert.equal((await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim(), '1');

    const again = await nets.ensure({ name: `t-${tag}`, bridge, subnet });
    assert.equal(again.dnsmasqPid, st.dnsmasqPid, 'the running dnsmasq is adopted, not duplicated');
    assert.equal(again.natRules, 3, 'rules are not added twice');

    await nets.remove(`t-${tag}`);
    assert.equal(await linkExists(bridge), false);
    assert.equal(identify(st.dnsmasqPid!), undefined, 'dnsmasq stopped');
    const left = await run('nft', ['list', 'table', 'ip', NFT_TABLE], { allowFail: true });
    assert.doesNotMatch(left.stdout, new RegExp(`fd-net:t-${tag}`));
    await assert.rejects(nets.status(`t-${tag}`), (e) => isFdError(e, 'FD_NET_NOT_FOUND'));
  } finally {
    await nets.remove(`t-${tag}`).catch(() => undefined);
    await run('ip', ['link', 'del', bridge], { allowFail: true });
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('user-mode fallback keeps MACs and turns only bridged NICs into user NICs', () => {
  const spec = parseVmSpec(
    {
      name: 'fb',
      uuid: randomUUID(),
      memoryBytes: 64 << 20,
      nics: [
        { id: 'a', mac: '52:54:00:00:00:01', network: { kind: 'bridge', bridge: 'fdbr0' } },
        { id: 'b', mac: '52:54:00:00:00:02', network: { kind: 'user', hostfwd: [{ hostPort: 2222, guestPort: 22 }] } },
      ],
    },
    { checkFiles: false },
  );
  const fb = withUserModeFallback(spec);
  assert.deepEqual(fb.nics[0], { id: 'a', mac: '52:54:00:00:00:01', network: { kind: 'user', hostfwd: [] } });
  assert.deepEqual(fb.nics[1], spec.nics[1]);
});
