/**
 * The lab for real: three hosts in network namespaces with a 3-member etcd and a daemon each,
 * driven through the library and the real CLI. Faults are injected the way HA tests will
 * (SIGKILL every process of a host, cut its link) and healed; `down` must leave nothing.
 * No guest boots here: VMs are created stopped.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { createServer, type AddressInfo } from 'node:net';
import { run } from '../../src/core/process.js';
import { isFdError } from '../../src/core/errors.js';
import { Lab } from '../../src/lab/lab.js';
import { bridgeName, labDir, netnsName, vethName } from '../../src/lab/names.js';
import { netnsPids, pidsMentioning, stopped } from '../../src/lab/procs.js';
import { CLI, type CliResult } from '../helpers/daemon.js';

// A host's liveness lease has a 3 s TTL; lost shows within a few seconds of the fault.
const LOST_TIMEOUT_MS = 30_000;
function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    c.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Everything of lab `prefix` still on the machine: the list must be empty after `down`. */
async function traces(prefix: string): Promise<string[]> {
  const left: string[] = [];
  const ns = await run('ip', ['netns', 'list']);
  for (const l of ns.stdout.split('\n')) if (l.startsWith(`fd-lab-${prefix}-`)) left.push(`netns ${l}`);
  const links = await run('ip', ['-o', 'link', 'show']);
  for (const m of links.stdout.matchAll(/^\d+:\s+([^:@\s]+)/gm))
    if (m[1]!.startsWith(`fdl${prefix}-`)) left.push(`link ${m[1]}`);
  const tables = await run('nft', ['list', 'tables']);
  if (tables.stdout.includes(`fdlab_${prefix}`)) left.push(`nft table fdlab_${prefix}`);
  if (existsSync(labDir(prefix))) left.push(labDir(prefix));
  for (const pid of await pidsMentioning(labDir(prefix) + '/')) left.push(`process ${pid}`);
  return left;
}

describe('a lab of 3 hosts', { timeout: 600_000 }, () => {
  const prefix = `t${randomBytes(3).toString('hex')}`;
  let lab: Lab;
  const names = ['h1', 'h2', 'h3'];

  before(async () => {
    lab = await Lab.up({ hosts: 3, prefix, isolateDirs: true });
  });
  after(async () => {
    await Lab.destroy(prefix);
  });

  it('every host answers host list with all 3 hosts online', async () => {
    for (const via of names) {
      const hosts = await lab.hostList(via);
      assert.deepEqual(
        hosts.map((h) => [h.name, h.state]).sort(),
        names.map((n) => [n, 'online']),
        `host list through ${via}`,
      );
    }
  });

  it('the CLI outside reaches a host by its data dir, over TLS with that host certificate', async () => {
    const r = await cli(['host', 'list', '--data-dir', lab.host('h3').dataDir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const hosts = JSON.parse(r.stdout) as { name: string; apiUrl: string }[];
    assert.equal(hosts.find((h) => h.name === 'h3')?.apiUrl, `https://${lab.host('h3').ip}:8420`);
  });

  it('etcd is one cluster of 3 members, one on each host IP', async () => {
    const members = await lab.etcdMembers();
    assert.deepEqual(
      members.map((m) => [m.name, m.clientURLs]).sort(),
      names.map((n) => [n, [`http://${lab.host(n).ip}:2379`]]),
    );
    assert.deepEqual(
      [...lab.etcdEndpoints],
      names.map((n) => `http://${lab.host(n).ip}:2379`),
    );
  });

  it('a VM created through h2 is visible through h1 (one shared store)', async () => {
    const created = await lab.api<{ id?: string }>('h2', 'POST', '/api/v1/vms?wait=true', {
      name: 'shared',
      diskSize: '64M',
      host: 'h2',
      network: 'none',
    });
    assert.ok(created.status < 300, JSON.stringify(created.body));
    const list = await lab.api<{ name: string; host: string }[]>('h1', 'GET', '/api/v1/vms');
    assert.deepEqual(
      list.body.filter((v) => v.name === 'shared').map((v) => v.host),
      ['h2'],
    );
  });

  it('lab exec runs a command inside the host namespace with its data dir, and passes its exit code', async () => {
    const addr = await cli(['lab', 'exec', 'h2', '--prefix', prefix, '--', 'ip', '-br', '-4', 'addr']);
    assert.equal(addr.code, 0, addr.stderr);
    assert.match(addr.stdout, new RegExp(`eth0\\S*\\s+UP\\s+${lab.host('h2').ip.replace(/\./g, '\\.')}/24`));
    assert.doesNotMatch(addr.stdout, new RegExp(lab.host('h1').ip.replace(/\./g, '\\.')), 'only h2 addresses');
    const env = await cli([
      'lab',
      'exec',
      'h2',
      '--prefix',
      prefix,
      '--',
      'sh',
      '-c',
      'echo $FLIGHTDECK_DATA_DIR; exit 7',
    ]);
    assert.equal(env.code, 7);
    assert.equal(env.stdout.trim(), lab.host('h2').dataDir);
    const inner = await cli(['lab', 'exec', 'h1', '--prefix', prefix, '--', 'flightdeck', 'vm', 'list', '--json']);
    assert.equal(inner.code, 0, inner.stderr);
    assert.deepEqual(
      (JSON.parse(inner.stdout) as { name: string }[]).map((v) => v.name),
      ['shared'],
      "the output is the inner command's JSON alone",
    );
  });

  it("with isolateDirs a host's processes see only its own data dir under the lab dir", async () => {
    const ls = await lab.exec('h2', ['ls', labDir(prefix)]);
    assert.deepEqual(ls.stdout.trim().split('\n'), ['h2']);
    const daemon = (await lab.status()).hosts.find((h) => h.name === 'h1')!.daemonPid!;
    // The daemon's own view, through its mount namespace.
    assert.deepEqual(await readdir(`/proc/${daemon}/root${labDir(prefix)}`), ['h1']);
    // This machine still sees all of them (and the state file).
    const all = await readdir(labDir(prefix));
    assert.deepEqual(all.filter((n) => /^h\d$/.test(n) || n === 'lab.json').sort(), ['h1', 'h2', 'h3', 'lab.json']);
  });

  it('traffic stays in the lab: hosts reach each other but neither this machine nor beyond', async () => {
    const gw = lab.state.gatewayIp;
    // A listener in the root namespace on every address, the lab gateway included.
    const server = createServer((sock) => sock.destroy());
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    const port = (server.address() as AddressInfo).port;
    const probe = (target: string, p: number): string =>
      `const s=require('net').connect({host:'${target}',port:${p},timeout:1500});` +
      `s.on('connect',()=>{console.log('open');process.exit(0)});` +
      `s.on('timeout',()=>{console.log('timeout');process.exit(1)});s.on('error',e=>{console.log(e.code);process.exit(1)})`;
    try {
      const fromRoot = await run(process.execPath, ['-e', probe(gw, port)], { allowFail: true });
      assert.equal(fromRoot.stdout.trim(), 'open', 'the listener works');
      const fromHost = await lab.exec('h1', [process.execPath, '-e', probe(gw, port)]);
      assert.equal(fromHost.stdout.trim(), 'timeout', 'h1 cannot open a connection into the root namespace');
      const peer = await lab.exec('h1', [process.execPath, '-e', probe(lab.host('h2').ip, 8420)]);
      assert.equal(peer.stdout.trim(), 'open', "h1 reaches h2's API");
      const out = await lab.exec('h1', ['ip', 'route', 'get', '1.1.1.1']);
      assert.notEqual(out.code, 0, `h1 has no route out of the lab: ${out.stdout}`);
    } finally {
      server.close();
    }
  });

  it('lab status --json reports every host up and online', async () => {
    const r = await cli(['lab', 'status', '--prefix', prefix, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const st = JSON.parse(r.stdout) as { hosts: { name: string; api: string; state: string }[]; etcdMembers: string[] };
    assert.deepEqual(
      st.hosts.map((h) => [h.name, h.api, h.state]),
      names.map((n) => [n, 'up', 'online']),
    );
    assert.deepEqual([...st.etcdMembers].sort(), names);
  });

  it('a second lab up with the same prefix is refused and leaves the lab running', async () => {
    await assert.rejects(Lab.up({ hosts: 1, prefix }), (err) => isFdError(err, 'FD_LAB_EXISTS'));
    assert.equal((await lab.hostList('h1')).length, 3);
  });

  it('kill: every process of h2 dies, the others answer and see it lost; heal brings it back', async () => {
    const failed = await cli(['lab', 'fail', 'h2', '--mode', 'kill', '--prefix', prefix, '--json']);
    assert.equal(failed.code, 0, failed.stderr);
    assert.deepEqual(await netnsPids(lab.host('h2').netns), [], 'no process left in h2');
    const seen = await lab.waitHostStates('h1', { online: ['h1', 'h3'], lost: ['h2'] }, LOST_TIMEOUT_MS);
    assert.equal(seen.length, 3);
    assert.equal((await lab.hostList('h3')).find((h) => h.name === 'h2')?.state, 'lost');

    const healed = await cli(['lab', 'heal', 'h2', '--prefix', prefix, '--json']);
    assert.equal(healed.code, 0, healed.stderr);
    assert.deepEqual((JSON.parse(healed.stdout) as { restarted: string[] }[])[0]!.restarted, ['etcd', 'daemon']);
    await lab.waitHostStates('h1', { online: names }, LOST_TIMEOUT_MS);
    assert.deepEqual(
      (await lab.hostList('h2')).map((h) => h.state),
      ['online', 'online', 'online'],
    );
    // The member rejoined with its data: the cluster still has exactly 3 members.
    assert.equal((await lab.etcdMembers()).length, 3);
    // The VM record it owns survived in etcd.
    const vms = await lab.api<{ name: string; host: string }[]>('h2', 'GET', '/api/v1/vms');
    assert.deepEqual(
      vms.body.map((v) => [v.name, v.host]),
      [['shared', 'h2']],
    );
  });

  it('restartDaemon: a new daemon on h1, its etcd member untouched, the cluster sees it online', async () => {
    const h1 = lab.host('h1');
    const etcdBefore = (await lab.status()).hosts.find((h) => h.name === 'h1')!.etcdPid;
    const r = await lab.restartDaemon('h1');
    assert.ok(r.oldPid !== null && r.pid !== r.oldPid, `a new daemon process (${r.oldPid} -> ${r.pid})`);
    const row = (await lab.status()).hosts.find((h) => h.name === 'h1')!;
    assert.deepEqual([row.daemonPid, row.etcdPid], [r.pid, etcdBefore]);
    await lab.waitHostStates('h2', { online: names }, LOST_TIMEOUT_MS);
    assert.equal((await lab.api<{ host: string }>('h1', 'GET', '/api/v1/health')).body.host, h1.name);
  });

  // Calls that reach the partitioned member time out (8 s) and are retried on another member
  // (src/cluster/store.ts); no circuit breaker can fail them all.
  it('partition: h3 keeps running cut off, h1 sees it lost; heal brings it back online', async () => {
    const before = await netnsPids(lab.host('h3').netns);
    await lab.fail('h3', 'partition');
    try {
      // Its processes keep running: the same ones, none stopped.
      assert.deepEqual(await netnsPids(lab.host('h3').netns), before);
      await lab.waitHostStates('h1', { online: ['h1', 'h2'], lost: ['h3'] }, LOST_TIMEOUT_MS);
      // Polled: an API call that reaches the cut-off etcd member waits out the call deadline
      // (8 s) before another member answers, beyond hostList's 5 s.
      await lab.waitHostStates('h2', { online: ['h1', 'h2'], lost: ['h3'] }, LOST_TIMEOUT_MS);
      // Cut off from the root namespace too (packets dropped: a bounded wait, not a refusal).
      await assert.rejects(lab.api('h3', 'GET', '/api/v1/health', undefined, 2000), (err) =>
        isFdError(err, 'FD_LAB_UNREACHABLE'),
      );
    } finally {
      const healed = await lab.heal('h3');
      assert.deepEqual(healed.restarted, [], 'nothing had died');
    }
    await lab.waitHostStates('h1', { online: names }, LOST_TIMEOUT_MS);
  });

  it('freeze: every process of h3 stops and its API goes silent; heal resumes the same processes', async () => {
    const h3 = lab.host('h3');
    const pids = await netnsPids(h3.netns);
    assert.ok(pids.length >= 2, 'h3 runs at least its daemon and etcd member');
    try {
      await lab.fail('h3', 'freeze');
      assert.deepEqual(
        await Promise.all(pids.map(stopped)),
        pids.map(() => true),
        'every process is stopped',
      );
      const st = await lab.status();
      const row = st.hosts.find((h) => h.name === 'h3')!;
      assert.deepEqual([row.api, row.failure], ['down', 'freeze']);
    } finally {
      await lab.heal('h3');
    }
    assert.deepEqual(
      await Promise.all(pids.map(stopped)),
      pids.map(() => false),
      'every process runs again',
    );
    assert.deepEqual(await netnsPids(h3.netns), pids, 'the same processes, none restarted');
    const health = await lab.api<{ host: string }>('h3', 'GET', '/api/v1/health');
    assert.equal(health.body.host, 'h3');
  });

  it('down leaves no process, namespace, link, nft table or directory', async () => {
    assert.ok((await traces(prefix)).length > 0, 'the lab exists before down');
    const r = await cli(['lab', 'down', '--prefix', prefix, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await traces(prefix), []);
  });
});

describe('lab down after a crashed lab up', () => {
  it('removes namespaces, links, processes and the data dir found by name alone', async () => {
    const prefix = `c${randomBytes(3).toString('hex')}`;
    try {
      // What an `up` killed half-way leaves: a namespace with a process in it, a bridge, a
      // veth, a data dir with a state file that is cut short.
      const ns = netnsName(prefix, 'h1');
      await run('ip', ['netns', 'add', ns]);
      await run('ip', ['link', 'add', bridgeName(prefix), 'type', 'bridge']);
      await run('ip', ['link', 'add', vethName(prefix, 2), 'type', 'veth', 'peer', 'name', `${vethName(prefix, 2)}p`]);
      await mkdir(labDir(prefix), { recursive: true });
      await writeFile(`${labDir(prefix)}/lab.json`, '{"version":1,"pre');
      const sleeper = spawn('ip', ['netns', 'exec', ns, 'sleep', '600'], { stdio: 'ignore', detached: true });
      sleeper.unref();
      for (let i = 0; i < 100 && (await netnsPids(ns)).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal((await netnsPids(ns)).length, 1);
      await assert.rejects(Lab.load(prefix), (err) => isFdError(err, 'FD_LAB_STATE_CORRUPT'));

      const sleeperExited = new Promise((r) => sleeper.once('exit', r));
      const report = await Lab.destroy(prefix);
      assert.deepEqual(report.namespaces, [ns]);
      assert.equal(report.killed, 1);
      assert.deepEqual(await traces(prefix), []);
      assert.equal(await sleeperExited, null, 'the process in the namespace was killed, not left behind');
    } finally {
      await Lab.destroy(prefix).catch(() => undefined);
    }
  });

  it('refuses a bad prefix and a bad host count before touching anything', async () => {
    await assert.rejects(Lab.up({ hosts: 3, prefix: 'Bad-Prefix' }), (err) => isFdError(err, 'FD_LAB_BAD_PREFIX'));
    await assert.rejects(Lab.up({ hosts: 0, prefix: 'zz' }), (err) => isFdError(err, 'FD_LAB_BAD_HOSTS'));
    await assert.rejects(Lab.up({ hosts: 2, prefix: 'zz', subnet: '10.77.0.0/16' }), (err) =>
      isFdError(err, 'FD_LAB_BAD_SUBNET'),
    );
    await assert.rejects(Lab.up({ hosts: 2, prefix: 'zz', subnet: '127.0.0.0/24' }), (err) =>
      isFdError(err, 'FD_LAB_SUBNET_IN_USE'),
    );
    assert.deepEqual(await traces('zz'), []);
  });
});
