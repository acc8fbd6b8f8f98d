/**
 * The tiny guest's side of features other engineers test with it: NoCloud seed and OVF
 * environment ISOs on CD-ROMs (IDE on the pc machine, virtio-scsi on any machine), and ACPI
 * power-button shutdown that leaves the durable counter on disk.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { run, waitFor } from '../../src/core/process.js';
import { buildTinyImage, type TinyImage } from '../../src/host/images/tiny.js';
import { readCounterFromImage } from '../../src/host/images/vhd.js';
import { bootTiny, cleanup, privateDisk, type Stamped } from './tiny-guest.js';

let image: TinyImage;
const dirs: string[] = [];

before(async () => {
  image = await buildTinyImage();
});
after(async () => {
  for (const d of dirs) await cleanup(d);
});

type Of<K extends Stamped['kind']> = Extract<Stamped, { kind: K }>;

async function iso(dir: string, name: string, label: string, files: Record<string, string>): Promise<string> {
  const src = join(dir, `${name}.d`);
  await mkdir(src);
  for (const [f, text] of Object.entries(files)) await writeFile(join(src, f), text);
  const out = join(dir, `${name}.iso`);
  await run('genisoimage', ['-quiet', '-o', out, '-V', label, '-J', '-r', src]);
  return out;
}

test('tiny guest reads a NoCloud seed on IDE and an OVF environment on virtio-scsi', async () => {
  const { dir, disk } = await privateDisk(image);
  dirs.push(dir);
  const seed = await iso(dir, 'seed', 'cidata', {
    'meta-data': 'instance-id: iid-tiny-1\nlocal-hostname: seeded-host\n',
    'user-data': '#cloud-config\nruncmd:\n  - echo hello from user-data\n',
  });
  const ovf = await iso(dir, 'ovfenv', 'OVF ENV', {
    'ovf-env.xml': `<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
  <PropertySection>
    <Property oe:key="hostname" oe:value="ovf-host"/>
    <Property oe:value="192.168.10.5" oe:key="ip0"/>
    <Property oe:key="motd" oe:value="a &amp; b &lt;c&gt;"/>
  </PropertySection>
</Environment>
`,
  });
  const guest = bootTiny(image, disk, {
    machine: 'pc',
    extraArgs: [
      '-drive',
      `file=${seed},format=raw,media=cdrom,if=ide,index=2`,
      '-device',
      'virtio-scsi-pci,id=scsi0',
      '-drive',
      `file=${ovf},format=raw,if=none,id=ovfcd,media=cdrom,readonly=on`,
      '-device',
      'scsi-cd,drive=ovfcd,bus=scsi0.0',
    ],
  });
  try {
    await guest.waitFor('ready');
    const seedLines = guest.events.filter((e): e is Of<'seed'> => e.kind === 'seed').map((e) => `${e.key}=${e.value}`);
    assert.ok(seedLines.includes('hostname=seeded-host'), `seed hostname; saw ${seedLines.join(' | ')}`);
    assert.ok(seedLines.includes('instance-id=iid-tiny-1'), 'seed instance-id');
    assert.ok(seedLines.includes('user-data=#cloud-config'), 'user-data first line');
    assert.ok(seedLines.includes('user-data=  - echo hello from user-data'), 'user-data lines keep their indent');
    const ovfEnv = guest.events.filter((e): e is Of<'ovfenv'> => e.kind === 'ovfenv').map((e) => `${e.key}=${e.value}`);
    assert.deepEqual(
      ovfEnv.filter((l) => !l.startsWith('source=')),
      ['hostname=ovf-host', 'ip0=192.168.10.5', 'motd=a & b <c>'],
      'OVF environment properties, entities decoded',
    );
  } finally {
    await guest.kill();
  }
});

test('ACPI power button shuts the tiny guest down cleanly with the counter on disk', async () => {
  const { dir, disk } = await privateDisk(image);
  dirs.push(dir);
  const monitor = join(dir, 'mon.sock');
  const guest = bootTiny(image, disk, {
    machine: 'q35',
    // Root found by label, as when the root disk is not the first one.
    append: 'root=LABEL=tiny-root',
    extraArgs: ['-monitor', `unix:${monitor},server=on,wait=off`],
  });
  try {
    await guest.waitFor('ready');
    await guest.waitFor('counter', { where: (e) => e.n >= 5n });
    await waitFor(
      'monitor socket',
      () =>
        sendMonitor(monitor, 'system_powerdown')
          .then(() => true)
          .catch(() => undefined),
      {
        timeoutMs: 10_000,
      },
    );
    await guest.waitFor('powerbtn', { timeoutMs: 60_000 });
    assert.equal(await guest.exited, 0, 'QEMU exits by itself once the guest powers off');
    const last = guest.events.filter((e): e is Of<'counter'> => e.kind === 'counter').at(-1)!.n;
    const onDisk = await readCounterFromImage(disk);
    assert.ok(onDisk !== null && onDisk >= last, `counter on disk ${onDisk} >= last printed ${last}`);
  } finally {
    await guest.kill();
  }
});

test('tiny guest onlines a hot-plugged vCPU, runs DHCP on a hot-plugged NIC, never writes its counter to a foreign disk', async () => {
  const { dir, disk } = await privateDisk(image);
  dirs.push(dir);
  const monitor = join(dir, 'mon.sock');
  const foreign = join(dir, 'data.raw');
  await writeFile(foreign, Buffer.alloc(64 * 1024 * 1024));
  const guest = bootTiny(image, disk, {
    machine: 'pc',
    append: 'fd.counter_dev=/dev/vdb',
    extraArgs: [
      '-smp',
      '1,maxcpus=2',
      '-monitor',
      `unix:${monitor},server=on,wait=off`,
      '-drive',
      `file=${foreign},format=raw,if=virtio`,
    ],
  });
  try {
    await guest.waitFor('ready');
    const refused = await guest.waitFor('counter-error');
    assert.match(refused.detail, /not a tiny image disk/);
    await guest.waitFor('cpus', { where: (e) => e.online === 1 });
    const before = guest.events.length;
    await sendMonitor(monitor, 'device_add qemu64-x86_64-cpu,socket-id=0,core-id=1,thread-id=0,id=cpu1');
    await guest.waitFor('cpus', { where: (e) => e.online === 2, from: before });
    await sendMonitor(monitor, 'netdev_add user,id=hp0');
    await sendMonitor(monitor, 'device_add virtio-net-pci,netdev=hp0,id=hpnic0,romfile=');
    const ip = await guest.waitFor('ip', { from: before });
    assert.equal(ip.address, '10.0.2.15', 'the hot-plugged NIC got a DHCP lease');
    assert.equal(ip.dev, 'eth0');
  } finally {
    await guest.kill();
  }
  assert.equal(
    guest.events.some((e) => e.kind === 'counter'),
    false,
    'no durable counter on a disk that is not a tiny image',
  );
  assert.equal(await readCounterFromImage(foreign), null, 'the foreign disk was not written');
  assert.ok(
    (await readFile(foreign)).every((b) => b === 0),
    'the foreign disk is still all zeros',
  );
});

function sendMonitor(path: string, command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.on('connect', () => s.end(`${command}\n`, () => resolve()));
    s.on('error', reject);
  });
}
