/**
 * VmRunner against real QEMU under TCG with the boot-sector heartbeat guest (a 512-byte guest
 * that prints "HB <counter>" on COM1 every 50 ms of guest time and ignores the power button).
 * One guest at a time; each test cleans up its processes.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { isFdError } from '../../src/core/errors.js';
import { run, sleep, waitFor } from '../../src/core/process.js';
import { identify } from '../../src/host/pidfile.js';
import { findProcessesMentioning } from '../../src/host/proc-scan.js';
import { linkExists, tapName } from '../../src/host/tap.js';
import { createVhd } from '../../src/disk/vhd/create.js';
import { heartbeatAbove, heartbeatSpec, lastHeartbeat, nextEvent, testHost, type TestHost } from './helpers.js';
import { DEFAULT_VM_USERS } from '../../src/host/confine/vm-users.js';

let host: TestHost;
before(async () => {
  host = await testHost();
});
after(async () => {
  await host.dispose();
});

test('start, heartbeat, pause freezes the guest, resume continues it, state comes from QMP', async () => {
  const r = await host.runner();
  const spec = await heartbeatSpec(host, 'pr');
  const st = await r.start(spec);
  assert.equal(st.state, 'running');
  const uid = Number(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${st.pid}/status`, 'utf8'))![1]);
  const range = DEFAULT_VM_USERS;
  assert.ok(uid > range.first && uid <= range.first + 2 * range.count, `QEMU runs as a VM user (uid ${uid})`);
  await heartbeatAbove(r, 'pr', 2);

  const paused = nextEvent(r, (e) => e.vm === 'pr' && e.type === 'paused');
  await r.pause('pr');
  await paused;
  assert.equal((await r.status('pr')).state, 'paused');
  const frozenAt = await lastHeartbeat(r, 'pr');
  await sleep(600); // twelve heartbeat periods: a running guest would have printed
  assert.equal(await lastHeartbeat(r, 'pr'), frozenAt, 'heartbeat: no beat while paused');

  await r.resume('pr');
  assert.equal((await r.status('pr')).state, 'running');
  await heartbeatAbove(r, 'pr', frozenAt!);
  await r.stop('pr');
  assert.equal((await r.status('pr')).state, 'stopped');
  assert.equal(identify(st.pid!), undefined, 'QEMU is gone');
});

test('graceful shutdown of a guest that ignores the power button falls back to a force stop', async () => {
  const r = await host.runner();
  const st = await r.start(await heartbeatSpec(host, 'hung'));
  await heartbeatAbove(r, 'hung', 0);
  const events: string[] = [];
  r.on('event', (e) => e.vm === 'hung' && events.push(e.type));
  const res = await r.shutdown('hung', { timeoutMs: 500 });
  assert.deepEqual(res, { graceful: false });
  assert.deepEqual(events, ['powerdown', 'stopped']);
  const s = await r.status('hung');
  assert.equal(s.state, 'stopped');
  assert.equal(s.lastExit?.reason, 'stopped');
  assert.deepEqual(await findProcessesMentioning(r.paths('hung').dir + '/'), []);
  assert.equal(existsSync(r.paths('hung').qmp), false, 'sockets removed');
  assert.equal(st.pid && existsSync(`/proc/${st.pid}`), false);
});

test('a QEMU killed from outside is noticed, recorded with its stderr tail, and not restarted under "never"', async () => {
  const r = await host.runner();
  const st = await r.start(await heartbeatSpec(host, 'victim'));
  await heartbeatAbove(r, 'victim', 0);
  const crashed = nextEvent(r, (e) => e.vm === 'victim' && e.type === 'crashed');
  const killedAt = Date.now();
  process.kill(st.pid!, 'SIGTERM'); // QEMU says why it died on stderr
  const ev = await crashed;
  const noticedMs = Date.now() - killedAt;
  process.stdout.write(`# crash noticed after ${noticedMs} ms\n`);
  const s = await r.status('victim');
  assert.equal(s.state, 'crashed');
  assert.equal(s.lastExit?.reason, 'crashed');
  assert.match(s.lastExit!.stderrTail, /terminating on signal 15/);
  assert.equal((ev.detail as { pid: number }).pid, st.pid);
  await sleep(500);
  assert.equal((await r.status('victim')).state, 'crashed', 'restartPolicy never: stays down');
});

test('restart policy on-failure brings a crashed VM back with a new QEMU', async () => {
  const r = await host.runner();
  const st = await r.start(await heartbeatSpec(host, 'phoenix', { restartPolicy: 'on-failure' }));
  const restarted = nextEvent(r, (e) => e.vm === 'phoenix' && e.type === 'started' && e.detail?.['restarts'] === 1);
  process.kill(st.pid!, 'SIGKILL');
  await restarted;
  const s = await r.status('phoenix');
  assert.equal(s.state, 'running');
  assert.notEqual(s.pid, st.pid);
  assert.equal(s.restarts, 1);
  // a stop by a caller is not a failure: no restart
  await r.stop('phoenix');
  await sleep(800);
  assert.equal((await r.status('phoenix')).state, 'stopped');
});

test('an invalid spec starts nothing and names every problem', async () => {
  const r = await host.runner();
  await assert.rejects(
    r.start({
      name: 'bad',
      uuid: randomUUID(),
      memoryBytes: 1 << 20,
      disks: [{ id: 'd', source: { kind: 'raw', path: join(host.root, 'nope.raw') } }],
    }),
    (e) => isFdError(e, 'FD_VM_SPEC_INVALID') && /memoryBytes/.test(e.message),
  );
  assert.equal(existsSync(r.paths('bad').dir), false);
});

test('a QEMU that fails to start leaves no process, socket or tap behind', async () => {
  const bridge = `fdtb${randomUUID().slice(0, 8)}`;
  await run('ip', ['link', 'add', bridge, 'type', 'bridge']);
  try {
    const r = await host.runner();
    const vhd = join(host.root, 'ok.vhd');
    await createVhd(vhd, { sizeBytes: 8 << 20 });
    const broken = join(host.root, 'broken.qcow2');
    await writeFile(broken, Buffer.alloc(65536, 7)); // not a qcow2 image: QEMU refuses it
    const uuid = randomUUID();
    await assert.rejects(
      r.start({
        name: 'nostart',
        uuid,
        memoryBytes: 32 << 20,
        disks: [
          { id: 'v', source: { kind: 'vhd', path: vhd } },
          { id: 'q', source: { kind: 'qcow2', path: broken } },
        ],
        nics: [{ id: 'n0', mac: '52:54:00:aa:bb:01', network: { kind: 'bridge', bridge } }],
      }),
      (e) => isFdError(e, 'FD_VM_START_FAILED') && /qcow2|Image is not in/i.test(e.message),
    );
    const d = r.paths('nostart');
    assert.deepEqual(await findProcessesMentioning(d.dir + '/'), [], 'no QEMU or vdisk left');
    assert.equal(await linkExists(tapName(uuid, 'n0')), false, 'tap removed');
    for (const f of [d.qmp, d.serial, d.vdiskSocket('v'), d.pidfile]) assert.equal(existsSync(f), false, f);
    const s = await r.status('nostart');
    assert.equal(s.state, 'crashed');
    assert.equal(s.lastExit?.reason, 'start-failed');
    assert.match(s.lastExit!.stderrTail, /qcow2|Image is not in/i);
  } finally {
    await run('ip', ['link', 'del', bridge], { allowFail: true });
  }
});

test('CD-ROM media can be inserted and ejected while the VM runs', async () => {
  const r = await host.runner();
  const isoDir = join(host.root, 'isodir');
  await run('mkdir', ['-p', isoDir]);
  await writeFile(join(isoDir, 'x.txt'), 'x');
  const iso = join(host.root, 'media.iso');
  await run('genisoimage', ['-quiet', '-o', iso, isoDir]);
  await run('chmod', ['0644', iso]);
  await r.start(await heartbeatSpec(host, 'cd', { cdroms: [{ id: 'cd0', iso: null }] }));
  type Block = { qdev?: string; inserted?: { file: string } };
  const medium = async (): Promise<string | undefined> =>
    (await r.qmp('cd').execute<Block[]>('query-block')).find((b) => b.qdev?.includes('cd-cd0'))?.inserted?.file;
  assert.equal(await medium(), undefined);
  await r.changeMedia('cd', 'cd0', iso);
  assert.equal(await medium(), iso);
  await r.changeMedia('cd', 'cd0', null);
  assert.equal(await medium(), undefined);
  await assert.rejects(r.changeMedia('cd', 'nope', iso), (e) => isFdError(e, 'FD_VM_DEVICE_NOT_FOUND'));
  await r.stop('cd');
});

const CHILD = fileURLToPath(new URL('./runner-child.js', import.meta.url));

function runChild(job: object): { done: Promise<void>; pid: number; out: () => string; kill: () => void } {
  const c = spawn(process.execPath, [CHILD, JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  c.stdout.on('data', (d: Buffer) => (out += d.toString()));
  c.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return {
    done: new Promise((res) => c.once('exit', () => res())),
    pid: c.pid!,
    out: () => out,
    kill: () => c.kill('SIGKILL'),
  };
}

test('after the runner is SIGKILLed a new runner reattaches: same QEMU pid, guest keeps counting', async () => {
  await host.closeRunners();
  const spec = await heartbeatSpec(host, 'survivor');
  const child = runChild({ runDir: host.runDir, dataDir: host.dataDir, spec, op: 'start' });
  while (!/STARTED (\d+)/.test(child.out())) {
    if (child.out().includes('Error')) assert.fail(child.out());
    await sleep(50);
  }
  const pid = Number(/STARTED (\d+)/.exec(child.out())![1]);
  child.kill();
  await child.done;
  const r = await host.runner();
  const before = await heartbeatAbove(r, 'survivor', 3);
  const t0 = Date.now();
  const res = (await r.reattachAll()).filter((x) => x.name === 'survivor');
  process.stdout.write(`# reattach took ${Date.now() - t0} ms\n`);
  assert.deepEqual(res, [{ name: 'survivor', outcome: 'attached' }]);
  const s = await r.status('survivor');
  assert.equal(s.pid, pid, 'same QEMU process');
  assert.equal(s.state, 'running');
  // the guest was never reset: its counter continues from where it was, not from 0
  const afterN = await heartbeatAbove(r, 'survivor', before);
  assert.ok(afterN > before);

  // now the VM dies while no runner watches; the next runner notices
  await r.close();
  process.kill(pid, 'SIGKILL');
  await sleep(200);
  const r2 = await host.runner();
  const died = nextEvent(r2, (e) => e.type === 'died-while-away');
  assert.deepEqual(
    (await r2.reattachAll()).filter((x) => x.name === 'survivor'),
    [{ name: 'survivor', outcome: 'died-while-away' }],
  );
  await died;
  const s2 = await r2.status('survivor');
  assert.equal(s2.state, 'crashed');
  assert.equal(s2.lastExit?.noticedLate, true);
  await r2.remove('survivor');
  await r2.close();
});

test('SIGKILL of the runner at any step of start or stop leaves a state the next runner repairs', async () => {
  await host.closeRunners();
  const vhd = join(host.root, 'fault.vhd');
  await createVhd(vhd, { sizeBytes: 8 << 20 });
  const cases: Array<{ fault: string; op: string; outcome: string; running: boolean }> = [
    { fault: 'start:prepare', op: 'start', outcome: 'start-rolled-back', running: false },
    { fault: 'start:vdisk', op: 'start', outcome: 'start-rolled-back', running: false },
    { fault: 'start:qemu', op: 'start', outcome: 'start-rolled-back', running: false },
    { fault: 'start:qemu-spawned', op: 'start', outcome: 'start-rolled-back', running: false },
    { fault: 'start:qmp', op: 'start', outcome: 'start-adopted', running: true },
    { fault: 'stop:qemu', op: 'start-stop', outcome: 'stop-completed', running: false },
    { fault: 'stop:cleanup', op: 'start-stop', outcome: 'stop-completed', running: false },
  ];
  for (const c of cases) {
    const name = `fault-${c.fault.replace(':', '-')}`;
    const spec = await heartbeatSpec(host, name, {
      disks: [
        { id: 'boot', source: { kind: 'raw', path: join(host.root, `${name}-boot.raw`) } },
        { id: 'data', source: { kind: 'vhd', path: vhd } },
      ],
    });
    const child = runChild({ runDir: host.runDir, dataDir: host.dataDir, spec, op: c.op, fault: c.fault });
    await child.done;
    assert.doesNotMatch(child.out(), /DONE/, `${c.fault}: the runner should have died`);
    const r = await host.runner();
    const res = (await r.reattachAll()).filter((x) => x.name === name);
    assert.deepEqual(res, [{ name, outcome: c.outcome }], `${c.fault}: ${child.out()}`);
    const d = r.paths(name);
    if (c.running) {
      assert.equal((await r.status(name)).state, 'running', c.fault);
      await r.stop(name);
    }
    assert.deepEqual(await findProcessesMentioning(d.dir + '/'), [], `${c.fault}: no QEMU or vdisk left`);
    assert.equal(existsSync(d.vdiskSocket('data')), false, `${c.fault}: vdisk socket removed`);
    assert.notEqual((await r.status(name)).state, 'running');
    await r.remove(name);
    await r.close();
  }
});

test('reset restarts the guest; reboot asks the guest (BIOS honours Ctrl-Alt-Del), a frozen one gets a reset', async () => {
  const r = await host.runner();
  await r.start(await heartbeatSpec(host, 'rb'));
  const before = await heartbeatAbove(r, 'rb', 10);
  const serialBefore = (await readFile(r.paths('rb').serialLog, 'latin1')).length;
  const reset = nextEvent(r, (e) => e.vm === 'rb' && e.type === 'reset');
  await r.reset('rb');
  await reset;
  // after a reset the boot sector runs again: its counter starts over at 0
  const counterAfter = async (): Promise<number[]> =>
    [...(await readFile(r.paths('rb').serialLog, 'latin1')).slice(serialBefore).matchAll(/HB ([0-9A-F]{4})/g)].map(
      (m) => parseInt(m[1]!, 16),
    );
  await waitFor('heartbeat after reset', async () => ((await counterAfter()).length ? true : undefined), {
    timeoutMs: 30_000,
  });
  assert.ok((await counterAfter())[0]! < before, 'heartbeat counter restarted');
  assert.deepEqual(await r.reboot('rb', { timeoutMs: 10_000 }), { graceful: true });
  await r.pause('rb'); // a paused guest cannot answer Ctrl-Alt-Del
  assert.deepEqual(await r.reboot('rb', { timeoutMs: 500 }), { graceful: false });
  await r.resume('rb');
  assert.equal((await r.status('rb')).state, 'running');
  await r.stop('rb');
});
