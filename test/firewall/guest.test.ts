/**
 * The host firewall around a real guest: the tiny guest on a bridge (static DHCP lease), a peer
 * namespace on the same bridge (another machine), and the host itself. Rules change while the
 * guest runs (same QEMU process); anti-spoofing stops a guest that changes its own address or
 * MAC from its shell. Probes: the guest's TCP echo service (port 7), ping from the guest's shell.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { run, waitFor } from '../../src/core/process.js';
import { createDifferencingVhd } from '../../src/disk/vhd/create.js';
import { HostFirewall } from '../../src/host/firewall/engine.js';
import type { FirewallState, NicFirewall, FirewallRule } from '../../src/host/firewall/model.js';
import { parseProbeLine } from '../../src/host/images/probes.js';
import {
  buildTinyImage,
  tinyImagePaths,
  TINY_CMDLINE,
  TINY_ECHO_PORT,
  withProbes,
} from '../../src/host/images/tiny.js';
import { HostNetworks } from '../../src/host/network.js';
import { tapName } from '../../src/host/tap.js';
import type { VmRunner } from '../../src/host/runner.js';
import { guestShell, type GuestShell } from '../helpers/guest-shell.js';
import { testHost, type TestHost } from '../vm/helpers.js';

const tag = randomBytes(3).toString('hex');
const bridge = `fdfw${tag}`;
const netns = `fdfwpeer${tag}`;
const veth = `fdfv${tag}`;
const table = `fdfw_${tag}`;
const octet = 100 + (randomBytes(1)[0]! % 100);
const prefix = `10.${octet}.${randomBytes(1)[0]! % 250}`;
const gateway = `${prefix}.1`;
const peerIp = `${prefix}.3`;
const guestIp = `${prefix}.10`;
const mac = '52:54:00:fd:20:01';
let host: TestHost;
let runner: VmRunner;
let nets: HostNetworks;
let fw: HostFirewall;
let shell: GuestShell;
let uuid: string;

type Probe = 'echoed' | 'refused' | 'timeout' | 'error';

/** Connects to the guest's echo port from the host or the peer namespace; what happened. */
async function echoProbe(from: 'host' | 'peer', localAddress?: string): Promise<Probe> {
  const local = localAddress ? `,localAddress:'${localAddress}'` : '';
  const script = `const s=require('net').connect({port:${TINY_ECHO_PORT},host:'${guestIp}'${local}});
    const t=setTimeout(()=>{console.log('timeout');process.exit(0)},3000);
    s.on('connect',()=>s.write('fd-echo\\n'));
    s.on('data',d=>{if(String(d).includes('fd-echo')){console.log('echoed');process.exit(0)}});
    s.on('error',e=>{console.log(e.code==='ECONNREFUSED'||e.code==='ECONNRESET'?'refused':'error');process.exit(0)});`;
  const argv = from === 'peer' ? ['ip', 'netns', 'exec', netns, process.execPath] : [process.execPath];
  const r = await run(argv[0]!, [...argv.slice(1), '-e', script], { allowFail: true });
  return r.stdout.trim() as Probe;
}

function nic(extra: Partial<NicFirewall> = {}): NicFirewall {
  return {
    vm: 'fwvm',
    nic: 'lan',
    tap: tapName(uuid, 'lan'),
    bridge,
    mac,
    addresses: [guestIp],
    groups: [],
    rules: [],
    defaultIn: 'accept',
    defaultOut: 'accept',
    antiSpoof: true,
    logDrops: true,
    ...extra,
  };
}

function state(n: NicFirewall, groupRules: FirewallRule[] = []): FirewallState {
  return {
    groups: [{ name: 'web', rules: groupRules }],
    groupMembers: { web: [guestIp] },
    networks: {},
    nics: [n],
    protectedAddresses: [gateway],
  };
}

const qemuPid = async (): Promise<number> => Number((await readFile(runner.paths('fwvm').pidfile, 'utf8')).trim());

before(async () => {
  host = await testHost();
  const cached = tinyImagePaths();
  const img = withProbes(existsSync(cached.manifest) ? { ...cached, cmdline: TINY_CMDLINE } : await buildTinyImage());
  nets = new HostNetworks({ dataDir: host.dataDir });
  await nets.ensure({
    name: `fwnet-${tag}`,
    bridge,
    subnet: `${prefix}.0/24`,
    nat: false,
    staticLeases: [{ mac, ip: guestIp }],
  });
  await run('ip', ['netns', 'add', netns]);
  await run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await run('ip', ['link', 'set', veth, 'master', bridge, 'up']);
  await run('ip', ['-n', netns, 'addr', 'add', `${peerIp}/24`, 'dev', 'eth0']);
  await run('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
  await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  fw = new HostFirewall({ stateDir: host.dataDir, table });
  uuid = randomUUID();
  // rules in force before the guest runs: its tap exists before QEMU starts, dispatch is by name
  await fw.apply(state(nic()));
  const disk = join(host.root, 'fw-child.vhd');
  await createDifferencingVhd(disk, img.disk);
  runner = await host.runner();
  await runner.start({
    name: 'fwvm',
    uuid,
    memoryBytes: 160 << 20,
    boot: { kernel: { kernel: img.kernel, initrd: img.initrd, cmdline: `${img.cmdline} fd.hb_ms=1000` } },
    disks: [{ id: 'root', source: { kind: 'vhd', path: disk } }],
    nics: [{ id: 'lan', mac, network: { kind: 'bridge', bridge } }],
  });
  await waitFor(
    'guest FD-IP probe',
    async () => {
      const text = await readFile(runner.paths('fwvm').serialLog, 'latin1').catch(() => '');
      return text.split('\n').some((l) => {
        const ev = parseProbeLine(l);
        return ev?.kind === 'ip' && ev.address === guestIp;
      })
        ? true
        : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 200 },
  );
  shell = await guestShell(runner.paths('fwvm'));
});

after(async () => {
  shell?.close();
  await host?.dispose();
  await fw?.clear();
  await nets?.remove(`fwnet-${tag}`).catch(() => undefined);
  await run('ip', ['netns', 'del', netns], { allowFail: true });
  await run('ip', ['link', 'del', veth], { allowFail: true });
  await run('ip', ['link', 'del', bridge], { allowFail: true });
});

test('a port blocked by a group rule, rejected, then allowed again, while the guest runs', async () => {
  const pid = await qemuPid();
  assert.equal(await echoProbe('peer'), 'echoed', 'echo from the peer with no rule');
  assert.equal(await echoProbe('host'), 'echoed', 'echo from the host with no rule');

  const block: FirewallRule = {
    id: 'echo',
    direction: 'in',
    action: 'drop',
    proto: 'tcp',
    ports: { from: TINY_ECHO_PORT, to: TINY_ECHO_PORT },
    log: true,
  };
  await fw.apply(state(nic({ groups: ['web'] }), [block]));
  assert.equal(await echoProbe('peer'), 'timeout', 'dropped from the peer (bridged path)');
  assert.equal(await echoProbe('host'), 'timeout', 'dropped from the host (output path)');
  const hits = (await fw.counters())[0]!.rules.find((r) => r.ruleId === 'echo')!;
  assert.ok(hits.packets >= 2, `the rule's counter saw the dropped SYNs: ${JSON.stringify(hits)}`);
  const log = (await run('dmesg', [])).stdout;
  assert.match(
    log,
    new RegExp(`fdfw fwvm/lan echo drop .*DST=${guestIp.replaceAll('.', '\\.')}.*DPT=${TINY_ECHO_PORT}`),
    'the drop was logged',
  );

  await fw.apply(state(nic({ groups: ['web'] }), [{ ...block, action: 'reject' }]));
  assert.equal(await echoProbe('peer'), 'refused', 'rejected: the peer gets a reset');
  const after = (await fw.counters())[0]!.rules.find((r) => r.ruleId === 'echo')!;
  assert.ok(after.packets > hits.packets, 'the counter kept its count across the change and went on');

  // default-in drop with an accept for the echo port from the peer only
  const fromPeer: FirewallRule = { ...block, id: 'peer', action: 'accept', peer: { kind: 'cidr', cidr: peerIp } };
  await fw.apply(state(nic({ defaultIn: 'drop', rules: [fromPeer] })));
  assert.equal(await echoProbe('peer'), 'echoed', 'allowed from the peer');
  assert.equal(await echoProbe('host'), 'timeout', 'the host is not the peer: default-in drop');
  assert.equal(await qemuPid(), pid, 'same QEMU process throughout');
});

test('replies to what the guest opened pass a default-in drop (connection tracking)', async () => {
  await fw.apply(state(nic({ defaultIn: 'drop' })));
  const got: string[] = [];
  const server = createServer((s) => {
    s.on('data', (d) => {
      got.push(String(d).trim());
      s.end('fd-reply\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, gateway, r));
  const port = (server.address() as { port: number }).port;
  try {
    const r = await shell.run(`echo fd-hello | nc -w 3 ${gateway} ${port}`);
    assert.deepEqual(got, ['fd-hello'], "the host got the guest's connection");
    assert.match(r.output, /fd-reply/, 'the guest got the reply through default-in drop');
    assert.equal(await echoProbe('host'), 'timeout', 'a new connection in is still dropped');
  } finally {
    server.close();
  }
});

test('a guest that changes its address or its MAC reaches nobody', async () => {
  await fw.apply(state(nic()));
  const ping = async (): Promise<{ gw: boolean; peer: boolean }> => ({
    gw: (await shell.run(`ping -c 2 -W 2 ${gateway} >/dev/null`)).status === 0,
    peer: (await shell.run(`ping -c 2 -W 2 ${peerIp} >/dev/null`)).status === 0,
  });
  assert.deepEqual(await ping(), { gw: true, peer: true }, 'with its own address and MAC it reaches both');
  const spoofBefore = (await fw.counters())[0]!.spoof.packets;

  const spoofIp = `${prefix}.66`;
  await shell.run(`ip addr del ${guestIp}/24 dev eth0; ip addr add ${spoofIp}/24 dev eth0; ip neigh flush all`);
  assert.deepEqual(await ping(), { gw: false, peer: false }, `as ${spoofIp} it reaches nobody`);
  const spoofIpCount = (await fw.counters())[0]!.spoof.packets;
  assert.ok(spoofIpCount > spoofBefore, 'anti-spoofing counted the frames');
  assert.match((await run('dmesg', [])).stdout, /fdfw fwvm\/lan spoof /, 'spoofed frames were logged');
  await shell.run(`ip addr del ${spoofIp}/24 dev eth0; ip addr add ${guestIp}/24 dev eth0; ip neigh flush all`);
  assert.deepEqual(await ping(), { gw: true, peer: true }, 'back on its own address it reaches both');

  await shell.run(
    'ip link set eth0 down; ip link set eth0 address 52:54:00:66:66:66; ip link set eth0 up; ip neigh flush all',
  );
  await shell.run(`ip addr replace ${guestIp}/24 dev eth0`);
  assert.deepEqual(await ping(), { gw: false, peer: false }, 'with another MAC it reaches nobody');
  assert.ok((await fw.counters())[0]!.spoof.packets > spoofIpCount, 'anti-spoofing counted the frames');
  await shell.run(`ip link set eth0 down; ip link set eth0 address ${mac}; ip link set eth0 up`);
  await shell.run(`ip addr replace ${guestIp}/24 dev eth0; ip neigh flush all`);
  assert.deepEqual(await ping(), { gw: true, peer: true }, 'back on its own MAC it reaches both');
});

test("between two filtered NICs a packet passes the sender's out rules, then the receiver's in rules", async () => {
  // the peer namespace's veth stands in for a second VM's tap: dispatch is by interface name
  const peerMac = (await run('ip', ['-n', netns, '-j', 'link', 'show', 'eth0'])).stdout;
  const b: NicFirewall = {
    ...nic(),
    vm: 'peervm',
    tap: veth,
    mac: (JSON.parse(peerMac) as Array<{ address: string }>)[0]!.address,
    addresses: [peerIp],
  };
  const echo = { proto: 'tcp' as const, ports: { from: TINY_ECHO_PORT, to: TINY_ECHO_PORT } };
  const two = (a: Partial<NicFirewall>, bb: Partial<NicFirewall>): FirewallState => ({
    groups: [
      { name: 'web', rules: [] },
      { name: 'db', rules: [] },
    ],
    groupMembers: { web: [guestIp], db: [peerIp] },
    networks: {},
    nics: [nic(a), { ...b, ...bb }],
    protectedAddresses: [gateway],
  });
  const outDrop: FirewallRule = {
    id: 'noweb',
    direction: 'out',
    action: 'drop',
    ...echo,
    peer: { kind: 'group', group: 'web' },
  };
  await fw.apply(two({}, { rules: [outDrop] }));
  assert.equal(await echoProbe('peer'), 'timeout', "the sender's out rule drops it");
  const bCounters = (await fw.counters()).find((c) => c.tap === veth)!;
  assert.ok(bCounters.rules.find((r) => r.ruleId === 'noweb')!.packets > 0, "the sender's rule counted it");

  const outAccept: FirewallRule = { ...outDrop, id: 'web', action: 'accept' };
  const inDrop: FirewallRule = {
    id: 'nodb',
    direction: 'in',
    action: 'drop',
    ...echo,
    peer: { kind: 'group', group: 'db' },
  };
  await fw.apply(two({ rules: [inDrop] }, { rules: [outAccept], defaultOut: 'drop' }));
  assert.equal(await echoProbe('peer'), 'timeout', "accepted on the way out, dropped by the receiver's in rule");
  await fw.apply(two({}, { rules: [outAccept], defaultOut: 'drop' }));
  assert.equal(await echoProbe('peer'), 'echoed', 'accepted by both');

  await run('ip', ['-n', netns, 'addr', 'replace', `${prefix}.77/24`, 'dev', 'eth0']);
  try {
    assert.equal(await echoProbe('peer', `${prefix}.77`), 'timeout', 'from a spoofed source address it reaches nobody');
    assert.equal(await echoProbe('peer'), 'echoed', 'from its own address it still does');
  } finally {
    await run('ip', ['-n', netns, 'addr', 'del', `${prefix}.77/24`, 'dev', 'eth0'], { allowFail: true });
  }
});
