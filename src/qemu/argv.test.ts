import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildQemuArgv, QEMU_BINARY, type LaunchContext } from './argv.js';
import { heartbeatCounts, writeBootImage } from './boot-sector.js';
import { QmpClient } from './qmp.js';
import { vmRunPaths } from './run-paths.js';
import { parseVmSpec, type VmSpecInput } from './spec.js';
import { run, waitFor } from '../core/process.js';

const UUID = '0b7f6c3e-2f4a-4d1b-8e9c-5a6b7c8d9e0f';
const base = { name: 'argv-test', uuid: UUID, memoryBytes: 64 << 20 };

function argvOf(input: Partial<VmSpecInput>, ctx: Partial<LaunchContext> = {}): string[] {
  const spec = parseVmSpec({ ...base, ...input }, { checkFiles: false });
  return buildQemuArgv(spec, { paths: vmRunPaths('/run/fd/vm1', 'flat'), accel: 'tcg', ...ctx });
}

const after = (argv: string[], flag: string): string[] => argv.flatMap((v, i) => (argv[i - 1] === flag ? [v] : []));

test('no defaults, sandboxed, and every control channel on a unix socket in the run dir', () => {
  const a = argvOf({ vnc: true });
  assert.ok(a.includes('-nodefaults') && a.includes('-no-user-config'));
  assert.deepEqual(after(a, '-sandbox'), ['on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny']);
  assert.deepEqual(after(a, '-qmp'), ['unix:/run/fd/vm1/qmp.sock,server=on,wait=off']);
  assert.deepEqual(after(a, '-vnc'), ['unix:/run/fd/vm1/vnc.sock']);
  assert.match(
    after(a, '-chardev')[0]!,
    /^socket,id=serial0,path=\/run\/fd\/vm1\/serial\.sock,server=on,wait=off,logfile=/,
  );
  assert.deepEqual(after(a, '-pidfile'), ['/run/fd/vm1/qemu.pid']);
  assert.ok(!a.some((x) => /tcp:|:59\d\d|port=/.test(x) && !x.startsWith('user')), 'no TCP listener');
  assert.deepEqual(after(a, '-accel'), ['tcg,thread=multi']);
  assert.deepEqual(after(a, '-m'), ['64M']);
});

test('runAs relaxes only elevateprivileges (QEMU 7.2 seccomp runs before -runas)', () => {
  const a = argvOf({}, { runAs: 'nobody' });
  assert.deepEqual(after(a, '-runas'), ['nobody']);
  assert.match(after(a, '-sandbox')[0]!, /elevateprivileges=allow/);
  assert.match(after(a, '-sandbox')[0]!, /spawn=deny/);
});

test('confined: QEMU files in q/, block files by fd set, kernel from its copy, a bounded TCG cache', () => {
  const spec = parseVmSpec(
    {
      ...base,
      disks: [{ id: 'boot', source: { kind: 'raw', path: '/srv/boot.raw' } }],
      cdroms: [{ id: 'cd0', iso: '/srv/seed.iso' }],
      boot: { kernel: { kernel: '/img/vmlinuz', initrd: '/img/initrd', cmdline: 'console=ttyS0' } },
    },
    { checkFiles: false },
  );
  const a = buildQemuArgv(spec, {
    paths: vmRunPaths('/run/fd/vm1'),
    accel: 'tcg',
    files: {
      '/srv/boot.raw': '/dev/fdset/1',
      '/srv/seed.iso': '/dev/fdset/2',
      '/img/vmlinuz': '/run/fd/vm1/q/kernel-vmlinuz',
      '/img/initrd': '/run/fd/vm1/q/initrd-initrd',
    },
    addFds: [
      { fd: 3, set: 1 },
      { fd: 4, set: 1 },
      { fd: 5, set: 2 },
    ],
    tcgCacheMiB: 256,
  });
  assert.deepEqual(after(a, '-qmp'), ['unix:/run/fd/vm1/q/qmp.sock,server=on,wait=off']);
  assert.deepEqual(after(a, '-pidfile'), ['/run/fd/vm1/q/qemu.pid']);
  assert.deepEqual(after(a, '-add-fd'), ['fd=3,set=1', 'fd=4,set=1', 'fd=5,set=2']);
  assert.deepEqual(after(a, '-kernel'), ['/run/fd/vm1/q/kernel-vmlinuz']);
  assert.deepEqual(after(a, '-initrd'), ['/run/fd/vm1/q/initrd-initrd']);
  assert.deepEqual(after(a, '-accel'), ['tcg,thread=multi,tb-size=256']);
  const blockdevs = after(a, '-blockdev').join('\n');
  assert.ok(blockdevs.includes('"filename":"/dev/fdset/1"') && blockdevs.includes('"filename":"/dev/fdset/2"'));
  assert.ok(!blockdevs.includes('/srv/'), 'no host path reaches a confined QEMU');
  assert.match(after(a, '-sandbox')[0]!, /elevateprivileges=deny/);
});

test('a VHD disk is an NBD blockdev on the vdisk socket with reconnect; raw and qcow2 are native', () => {
  const a = argvOf(
    {
      disks: [
        { id: 'root', source: { kind: 'vhd', path: '/pool/root.vhd' } },
        { id: 'data', source: { kind: 'qcow2', path: '/pool/data.qcow2' }, bus: 'sata', readOnly: true },
      ],
    },
    { nbd: { root: { socketPath: '/run/fd/vm1/vdisk.sock', exportName: 'root' } } },
  );
  const [root, data] = after(a, '-blockdev').map((j) => JSON.parse(j) as Record<string, unknown>);
  assert.deepEqual(root, {
    driver: 'nbd',
    'node-name': 'd-root',
    server: { type: 'unix', path: '/run/fd/vm1/vdisk.sock' },
    export: 'root',
    'reconnect-delay': 10,
    'read-only': false,
  });
  assert.equal(data!['driver'], 'qcow2');
  assert.deepEqual(data!['file'], { driver: 'file', filename: '/pool/data.qcow2', 'read-only': true });
  const devs = after(a, '-device');
  assert.ok(devs.includes('virtio-blk-pci,drive=d-root,id=vd-root,bootindex=1'), devs.join(' '));
  assert.ok(devs.includes('ide-hd,drive=d-data,id=vd-data,bus=ide.0,bootindex=2'), devs.join(' '));
});

test('NICs get their fixed MACs on virtio-net; tap for bridges, user netdev with forwards', () => {
  const a = argvOf(
    {
      nics: [
        { id: 'lan', mac: '52:54:00:00:00:0A', network: { kind: 'bridge', bridge: 'fdbr0' } },
        {
          id: 'nat',
          mac: '52:54:00:00:00:0b',
          network: { kind: 'user', hostfwd: [{ hostPort: 2222, guestPort: 22 }] },
        },
      ],
    },
    { taps: { lan: 'fdtap0' } },
  );
  assert.deepEqual(after(a, '-netdev'), [
    'tap,id=net-lan,ifname=fdtap0,script=no,downscript=no',
    'user,id=net-nat,hostfwd=tcp:127.0.0.1:2222-:22',
  ]);
  const nics = after(a, '-device').filter((d) => d.startsWith('virtio-net-pci'));
  assert.deepEqual(nics, [
    'virtio-net-pci,netdev=net-lan,mac=52:54:00:00:00:0a,id=nic-lan,romfile=',
    'virtio-net-pci,netdev=net-nat,mac=52:54:00:00:00:0b,id=nic-nat,romfile=',
  ]);
});

test('boot order maps to bootindex; kernel boot maps to -kernel/-initrd/-append', () => {
  const a = argvOf({
    boot: { order: ['cdrom', 'disk'] },
    disks: [{ id: 'd0', source: { kind: 'raw', path: '/x.raw' } }],
    cdroms: [{ id: 'cd', iso: '/install.iso' }],
  });
  const devs = after(a, '-device');
  assert.ok(
    devs.some((d) => d.startsWith('ide-cd,id=cd-cd,bus=ide.0,drive=cdm-cd,bootindex=1')),
    devs.join(' '),
  );
  assert.ok(devs.some((d) => d.startsWith('virtio-blk-pci,drive=d-d0,id=vd-d0,bootindex=2')));
  const k = argvOf({ boot: { kernel: { kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0' } } });
  assert.deepEqual(
    [after(k, '-kernel'), after(k, '-initrd'), after(k, '-append')],
    [['/k'], ['/i'], ['console=ttyS0']],
  );
});

interface Started {
  qmp: QmpClient;
  pid: number;
  stderr: () => string;
  stop: () => Promise<void>;
}

async function startQemu(argv: string[], qmpPath: string): Promise<Started> {
  const child = spawn(QEMU_BINARY, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor('QMP socket', () => (existsSync(qmpPath) || child.exitCode !== null ? true : undefined), {
    timeoutMs: 15_000,
  });
  if (child.exitCode !== null) throw new Error(`qemu exited ${child.exitCode}: ${err}`);
  const qmp = await QmpClient.connect(qmpPath);
  return {
    qmp,
    pid: child.pid!,
    stderr: () => err,
    stop: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

test('real QEMU: raw + qcow2 + ISO + empty CD + user NIC + VNC, as an unprivileged user', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-argv-'));
  let q: Started | undefined;
  try {
    const paths = vmRunPaths(dir, 'flat');
    const boot = await writeBootImage(join(dir, 'boot.raw'), 'heartbeat');
    const qcow = join(dir, 'data.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', qcow, '16M']);
    const isoDir = join(dir, 'iso');
    await run('mkdir', [isoDir]);
    await writeFile(join(isoDir, 'hello.txt'), 'hello');
    const iso = join(dir, 'cd.iso');
    await run('genisoimage', ['-quiet', '-o', iso, isoDir]);
    const spec = parseVmSpec({
      ...base,
      vnc: true,
      disks: [
        { id: 'boot', source: { kind: 'raw', path: boot } },
        { id: 'data', source: { kind: 'qcow2', path: qcow }, bus: 'sata' },
      ],
      cdroms: [
        { id: 'inst', iso },
        { id: 'empty', iso: null },
      ],
      nics: [{ id: 'n0', mac: '52:54:00:12:34:56', network: { kind: 'user' } }],
    });
    q = await startQemu(buildQemuArgv(spec, { paths, accel: 'tcg', runAs: 'nobody' }), paths.qmp);
    assert.equal((await q.qmp.execute<{ status: string }>('query-status')).status, 'running');
    const uid = /^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${q.pid}/status`, 'utf8'))![1];
    assert.equal(uid, '65534', 'QEMU dropped to nobody');
    const blocks = await q.qmp.execute<{ qdev?: string; inserted?: { file: string } }[]>('query-block');
    // qdev is the device id, or its QOM path (/machine/peripheral/<id>/virtio-backend) for virtio
    const byDev = new Map(
      blocks.map((b) => [/(?:peripheral\/)?([^/]+?)(?:\/virtio-backend)?$/.exec(b.qdev ?? '')?.[1], b.inserted?.file]),
    );
    assert.equal(byDev.get('vd-boot'), boot);
    assert.equal(byDev.get('vd-data'), qcow);
    assert.equal(byDev.get('cd-inst'), iso);
    assert.ok(byDev.has('cd-empty') && byDev.get('cd-empty') === undefined, 'empty drive exists with no medium');
    const net = await q.qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
    assert.match(net, /nic-n0.*macaddr=52:54:00:12:34:56/s);
    assert.ok(existsSync(paths.vnc) && existsSync(paths.serial));
    await waitFor(
      'heartbeat on serial.log',
      async () => {
        const s = await readFile(paths.serialLog, 'latin1').catch(() => '');
        return heartbeatCounts(s).length >= 3 ? true : undefined;
      },
      { timeoutMs: 20_000 },
    );
    assert.equal((await readFile(paths.pidfile, 'utf8')).trim(), String(q.pid));
  } finally {
    await q?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('real QEMU: a VHD-shaped disk boots over an NBD unix socket; UEFI firmware starts', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-argv-'));
  const started: Started[] = [];
  let nbd: ReturnType<typeof spawn> | undefined;
  try {
    const boot = await writeBootImage(join(dir, 'boot.raw'), 'heartbeat');
    const sock = join(dir, 'vdisk.sock');
    // qemu-nbd stands in for our vdisk server here: this test is about the argv shape
    nbd = spawn('qemu-nbd', ['-k', sock, '-x', 'boot', '-f', 'raw', '--persistent', '--shared=4', boot], {
      stdio: 'ignore',
    });
    await waitFor('qemu-nbd socket', () => (existsSync(sock) ? true : undefined), { timeoutMs: 10_000 });
    const vmDir = join(dir, 'vm');
    await run('mkdir', [vmDir]);
    const paths = vmRunPaths(vmDir, 'flat');
    const spec = parseVmSpec({ ...base, machine: 'pc', disks: [{ id: 'boot', source: { kind: 'vhd', path: boot } }] });
    const a = buildQemuArgv(spec, { paths, accel: 'tcg', nbd: { boot: { socketPath: sock, exportName: 'boot' } } });
    const q = await startQemu(a, paths.qmp);
    started.push(q);
    await waitFor(
      'heartbeat over NBD',
      async () => {
        const s = await readFile(paths.serialLog, 'latin1').catch(() => '');
        return heartbeatCounts(s).length >= 2 ? true : undefined;
      },
      { timeoutMs: 20_000 },
    );

    const uefiDir = join(dir, 'uefi');
    await run('mkdir', [uefiDir]);
    const up = vmRunPaths(uefiDir, 'flat');
    const vars = join(uefiDir, 'OVMF_VARS.fd');
    await copyFile('/usr/share/OVMF/OVMF_VARS_4M.fd', vars);
    const uspec = parseVmSpec({ ...base, memoryBytes: 128 << 20, firmware: 'uefi' });
    const u = await startQemu(
      buildQemuArgv(uspec, {
        paths: up,
        accel: 'tcg',
        uefi: { codePath: '/usr/share/OVMF/OVMF_CODE_4M.fd', varsPath: vars },
      }),
      up.qmp,
    );
    started.push(u);
    assert.equal((await u.qmp.execute<{ status: string }>('query-status')).status, 'running');
    const blocks = await u.qmp.execute<{ inserted?: { file: string } }[]>('query-block');
    assert.ok(
      blocks.some((b) => b.inserted?.file === vars),
      'the VM uses its own copy of the UEFI variables',
    );
  } finally {
    for (const s of started) await s.stop();
    nbd?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});
