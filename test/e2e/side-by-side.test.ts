/**
 * The README's promise that several daemons run side by side with their own --data-dir and
 * --listen: two daemons whose default network is a NAT bridge, each booting a VM that gets an
 * address by DHCP on its own daemon's bridge and answers the host there (the guest's TCP echo).
 * On a machine where the README's demo daemon runs, it already holds fdbr0 / 10.88.0.0/24.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';
import { HostNetworks } from '../../src/host/network.js';
import { claimsDir, overlaps, releaseNetwork } from '../../src/host/network-choice.js';

interface Network {
  name: string;
  kind: string;
  bridge: string | null;
  cidr: string | null;
}

const daemons: TestDaemon[] = [];
after(async () => {
  for (const d of daemons) {
    const nets = new HostNetworks({ dataDir: d.dataDir });
    const spec = (await nets.list().catch(() => [])).find((n) => n.name === 'default');
    await d.stop();
    // the VM goes with dispose; its bridge, rules and dnsmasq go here
    await nets.remove('default').catch(() => undefined);
    if (spec) await releaseNetwork(spec.bridge, d.dataDir);
    await d.dispose();
  }
});

/** The guest's address on its DHCP-served NIC, from its serial log. */
async function guestIp(d: TestDaemon, vmId: string): Promise<string> {
  return waitFor(
    'guest FD-IP line',
    async () => {
      const text = await readFile(join(d.dataDir, 'run', vmId, 'serial.log'), 'latin1').catch(() => '');
      for (const l of text.split('\n')) {
        const ev = parseProbeLine(l);
        if (ev?.kind === 'ip') return ev.address;
      }
      return undefined;
    },
    { timeoutMs: 180_000, intervalMs: 250 },
  );
}

/** One round trip through the guest's TCP echo service (port 7). */
function echo(ip: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port: 7, timeout: 10_000 });
    let got = '';
    s.on('connect', () => s.write(text));
    s.on('data', (b) => {
      got += b.toString();
      if (got.length >= text.length) s.end();
    });
    s.on('close', () => resolve(got));
    s.on('timeout', () => s.destroy(new Error(`echo to ${ip} timed out`)));
    s.on('error', reject);
  });
}

test('two daemons side by side: each its own bridge and subnet, each VM reachable on its own', async () => {
  // started one after the other, as a person would; each chooses once and records its choice
  for (let i = 0; i < 2; i++) daemons.push(await TestDaemon.start({ defaultNetwork: 'nat' }));
  const [a, b] = daemons as [TestDaemon, TestDaemon];
  const defaults: Network[] = [];
  for (const d of daemons) {
    const nets = await d.json<Network[]>(['network', 'list']);
    const def = nets.find((n) => n.name === 'default');
    assert.equal(def?.kind, 'nat', `a NAT default network: ${JSON.stringify(nets)}`);
    defaults.push(def!);
  }
  const [na, nb] = defaults as [Network, Network];
  assert.notEqual(na.bridge, nb.bridge, 'two bridges');
  assert.equal(overlaps(na.cidr!, nb.cidr!), false, `subnets ${na.cidr} and ${nb.cidr} apart`);

  const built = await a.cli(['image', 'build', 'tiny', '--probes']);
  assert.equal(built.code, 0, built.stdout + built.stderr);
  assert.equal((await b.cli(['image', 'build', 'tiny', '--probes'])).code, 0);
  const ips: string[] = [];
  for (const [d, net] of [
    [a, na],
    [b, nb],
  ] as const) {
    const vm = await d.json<{ result: { id: string } }>([
      'vm',
      'create',
      'side',
      '--image',
      'tiny',
      '--memory',
      '160M',
    ]);
    assert.equal((await d.json<{ state: string }>(['vm', 'start', 'side'])).state, 'succeeded');
    const ip = await guestIp(d, vm.result.id);
    assert.ok(overlaps(`${ip}/32`, net.cidr!), `guest ${ip} is on ${net.bridge} (${net.cidr})`);
    ips.push(ip);
  }
  for (const ip of ips) assert.equal(await echo(ip, `hello ${ip}\n`), `hello ${ip}\n`);

  // each choice is claimed for its own data dir, so a stopped daemon keeps it
  for (const [d, net] of [
    [a, na],
    [b, nb],
  ] as const) {
    const claim = JSON.parse(await readFile(join(claimsDir(), `${net.bridge}.json`), 'utf8')) as { dataDir: string };
    assert.equal(claim.dataDir, d.dataDir, `${net.bridge} is claimed by its daemon`);
  }
});
