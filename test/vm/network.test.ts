/**
 * A tiny guest on a managed bridge: its NIC is a tap on the bridge, dnsmasq gives it an address
 * by DHCP (the guest's own `FD-IP` probe line reports it), and stopping the VM removes the tap.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, waitFor } from '../../src/core/process.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { parseProbeLine } from '../../src/host/images/probes.js';
import { buildTinyImage, tinyImagePaths, TINY_CMDLINE, withProbes } from '../../src/host/images/tiny.js';
import { HostNetworks } from '../../src/host/network.js';
import { linkExists, tapName } from '../../src/host/tap.js';
import { testHost, type TestHost } from './helpers.js';

let host: TestHost;
before(async () => {
  host = await testHost();
});
after(async () => {
  await host.dispose();
});

test('a guest on the managed bridge gets a DHCP address; its tap goes away with the VM', async () => {
  const cached = tinyImagePaths();
  const img = withProbes(existsSync(cached.manifest) ? { ...cached, cmdline: TINY_CMDLINE } : await buildTinyImage());
  const tag = randomBytes(3).toString('hex');
  const bridge = `fdtv${tag}`;
  const third = randomBytes(1)[0]!;
  const subnet = `10.${200 + (randomBytes(1)[0]! % 50)}.${third}.0/24`;
  const nets = new HostNetworks({ dataDir: host.dataDir });
  const mac = '52:54:00:fd:10:01';
  try {
    const net = await nets.ensure({ name: `vmnet-${tag}`, bridge, subnet });
    const disk = join(host.root, 'net-child.vhd');
    await createDifferencingVhd(disk, img.disk);
    const uuid = randomUUID();
    const r = await host.runner();
    await r.start({
      name: 'netvm',
      uuid,
      memoryBytes: 160 << 20,
      boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: img.cmdline } },
      disks: [{ id: 'root', source: { kind: 'vhd', path: disk } }],
      nics: [{ id: 'lan', mac, network: { kind: 'bridge', bridge } }],
    });
    const tap = tapName(uuid, 'lan');
    const master = (await run('ip', ['-o', 'link', 'show', 'dev', tap])).stdout;
    assert.match(master, new RegExp(`master ${bridge}`), 'tap is on the bridge');
    const ip = await waitFor(
      'guest FD-IP probe',
      async () => {
        const text = await readFile(r.paths('netvm').serialLog, 'latin1').catch(() => '');
        for (const l of text.split('\n')) {
          const ev = parseProbeLine(l);
          if (ev?.kind === 'ip' && ev.address.startsWith('10.')) return ev.address;
        }
        return undefined;
      },
      { timeoutMs: 120_000, intervalMs: 200 },
    );
    const prefix = net.gateway.split('.').slice(0, 3).join('.') + '.';
    assert.ok(ip.startsWith(prefix), `guest address ${ip} is in ${subnet}`);
    const leases = await nets.leases(`vmnet-${tag}`);
    assert.ok(
      leases.some((l) => l.mac === mac && l.ip === ip),
      `dnsmasq leased ${ip} to ${mac}: ${JSON.stringify(leases)}`,
    );
    await r.stop('netvm');
    assert.equal(await linkExists(tap), false, 'tap removed on stop');
  } finally {
    await nets.remove(`vmnet-${tag}`).catch(() => undefined);
    await run('ip', ['link', 'del', bridge], { allowFail: true });
  }
});
