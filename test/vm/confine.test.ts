/**
 * QEMU confined per VM, tried from the inside: two VMs run under one runner; each QEMU has its
 * own uid from the reserved range, no capabilities, the strict sandbox, and a cgroup whose CPU,
 * memory and pids limits follow the VM's size; its vdisk runs as yet another user. Then, as the
 * second VM's QEMU user (what a guest escaping into its QEMU becomes), we try the first VM's
 * vdisk socket, QMP socket, serial log and disk: every one is refused, and the first VM runs on.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createVhd } from '../../src/disk/vhd/create.js';
import { limitsFor } from '../../src/host/confine/cgroups.js';
import { TCG_CACHE_MIB } from '../../src/host/runner/start.js';
import type { VmRecord } from '../../src/host/run-dir.js';
import type { VmRunner } from '../../src/host/runner.js';
import { heartbeatAbove, heartbeatSpec, testHost, type TestHost } from './helpers.js';

let host: TestHost;
let r: VmRunner;
before(async () => {
  host = await testHost();
  r = await host.runner();
});
after(async () => {
  await host.dispose();
});

const statusField = async (pid: number, field: string): Promise<string> =>
  new RegExp(`^${field}:\\s+(.*)$`, 'm').exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1]!.trim();
const record = async (name: string): Promise<VmRecord> =>
  JSON.parse(await readFile(r.paths(name).record, 'utf8')) as VmRecord;

async function startWithVhd(name: string, vcpus: number, memoryBytes: number): Promise<number> {
  const data = join(host.root, `${name}-data.vhd`);
  await createVhd(data, { sizeBytes: 8 << 20 });
  await chmod(data, 0o600); // as the daemon keeps disks (its data dir is private besides)
  const spec = await heartbeatSpec(host, name, { vcpus, memoryBytes });
  spec.disks = [...(spec.disks ?? []), { id: 'data', source: { kind: 'vhd', path: data } }];
  const st = await r.start(spec);
  await heartbeatAbove(r, name, 2);
  return st.pid!;
}

test('each VM: its own QEMU and vdisk users, no capabilities, the strict sandbox, a cgroup sized to it', async () => {
  const pidA = await startWithVhd('a', 1, 32 << 20);
  const pidB = await startWithVhd('b', 2, 64 << 20);
  const [recA, recB] = [await record('a'), await record('b')];
  assert.ok(recA.confine && recB.confine, 'both confined');
  assert.notEqual(recA.confine.qemuUid, recB.confine.qemuUid);
  for (const [pid, rec] of [
    [pidA, recA],
    [pidB, recB],
  ] as const) {
    assert.equal((await statusField(pid, 'Uid')).split(/\s+/)[0], String(rec.confine!.qemuUid));
    assert.equal(await statusField(pid, 'CapEff'), '0000000000000000');
    assert.equal(await statusField(pid, 'NoNewPrivs'), '1');
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(argv.includes('on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny'), argv.join(' '));
    assert.ok(!argv.includes('-runas'));
    // The vdisk dropped root for its own user once its files were open.
    assert.equal((await statusField(rec.vdisk!.pid, 'Uid')).split(/\s+/)[0], String(rec.confine!.vdiskUid));
    // cgroup: QEMU is in it, and the limits follow the VM's size.
    const cg = rec.confine!.cgroup!;
    const want = limitsFor(rec.spec.vcpus, rec.spec.memoryBytes, TCG_CACHE_MIB << 20);
    assert.deepEqual(cg.limits, want);
    if (cg.kind === 'v1') {
      const [cpu, memory, pids] = cg.dirs as [string, string, string];
      assert.ok((await readFile(join(memory, 'cgroup.procs'), 'utf8')).split('\n').includes(String(pid)));
      assert.equal(Number(await readFile(join(memory, 'memory.limit_in_bytes'), 'utf8')), want.memoryBytes);
      assert.equal(Number(await readFile(join(cpu, 'cpu.cfs_quota_us'), 'utf8')), want.cpuQuotaUs);
      assert.equal(Number(await readFile(join(pids, 'pids.max'), 'utf8')), want.pids);
    } else if (cg.kind === 'v2') {
      const dir = cg.dirs[0]!;
      assert.ok((await readFile(join(dir, 'cgroup.procs'), 'utf8')).split('\n').includes(String(pid)));
      assert.equal(Number(await readFile(join(dir, 'memory.max'), 'utf8')), want.memoryBytes);
    } else assert.fail(`this host should use a cgroup (got ${cg.kind})`);
  }
  assert.ok(recB.confine.cgroup!.limits.memoryBytes > recA.confine.cgroup!.limits.memoryBytes);
  assert.ok(recB.confine.cgroup!.limits.cpuQuotaUs > recA.confine.cgroup!.limits.cpuQuotaUs);
});

test("the second VM's QEMU user cannot reach the first VM's sockets, log or disk", async () => {
  const [recA, recB] = [await record('a'), await record('b')];
  const pa = r.paths('a');
  const probe = `
    const net = require('node:net'); const fs = require('node:fs');
    const tries = JSON.parse(process.argv[1]); const out = {};
    let left = tries.length;
    const done = () => { if (--left === 0) process.stdout.write(JSON.stringify(out)); };
    for (const [kind, path] of tries) {
      if (kind === 'socket') {
        const s = net.connect(path);
        s.once('connect', () => { out[path] = 'connected'; s.destroy(); done(); });
        s.once('error', (e) => { out[path] = e.code; done(); });
      } else {
        try { fs.readFileSync(path); out[path] = 'read'; } catch (e) { out[path] = e.code; }
        done();
      }
    }`;
  const tries = [
    ['socket', recA.vdiskExports[0]!.socketPath],
    ['socket', pa.qmp],
    ['file', pa.serialLog],
    ['file', recA.vdiskExports[0]!.image],
    ['file', pa.record],
  ];
  const u = recB.confine!;
  const res = spawnSync(
    'setpriv',
    [
      `--reuid=${u.qemuUid}`,
      `--regid=${u.qemuUid}`,
      `--groups=${u.sharedGid}`,
      '--',
      process.execPath,
      '-e',
      probe,
      JSON.stringify(tries),
    ],
    { encoding: 'utf8' },
  );
  assert.equal(res.status, 0, res.stderr);
  const got = JSON.parse(res.stdout) as Record<string, string>;
  for (const [, path] of tries) assert.equal(got[path!], 'EACCES', `${path}: ${got[path!]}`);
  // The same probe as the first VM's own user reaches its own vdisk socket: the refusal above
  // is the other VM's, not a broken socket.
  const own = recA.confine!;
  const mine = spawnSync(
    'setpriv',
    [
      `--reuid=${own.qemuUid}`,
      `--regid=${own.qemuUid}`,
      `--groups=${own.sharedGid}`,
      '--',
      process.execPath,
      '-e',
      probe,
      JSON.stringify([tries[0]]),
    ],
    { encoding: 'utf8' },
  );
  assert.equal((JSON.parse(mine.stdout) as Record<string, string>)[tries[0]![1]!], 'connected');
  await heartbeatAbove(r, 'a', 5);
});

test('a stopped VM gives back its users and its cgroup', async () => {
  const rec = await record('a');
  await r.stop('a');
  await r.stop('b');
  assert.equal(existsSync(rec.confine!.claim), false, 'claim released');
  for (const dir of rec.confine!.cgroup!.dirs) assert.equal(existsSync(dir), false, `${dir} removed`);
});
