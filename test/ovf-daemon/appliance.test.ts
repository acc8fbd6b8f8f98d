/**
 * OVF/OVA import and export through a real daemon and the real CLI: a tiny-image VM exported
 * and imported back (same hardware, byte-identical disk per qemu-img, and the imported VM boots
 * and reads the durable counter it was exported with), a vendor-style appliance with a EULA,
 * typed properties and deployment options (the guest prints the OVF environment it finds and
 * the CPUs and memory the option chose), a real fixture (COT's input.ovf: streamOptimized VMDK
 * compared with qemu-img's reading, ISO, SHA1 manifest), and bad inputs that must leave nothing
 * behind. Two guest boots in all, 128-192 MiB each.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { REPO_ROOT, TestDaemon } from '../helpers/daemon.js';
import { run, waitFor } from '../../src/core/process.js';
import { parseProbeLine, type ProbeEvent } from '../../src/host/images/probes.js';
import { COUNTER_OFFSET_BYTES, counterRecord } from '../../src/host/images/counter.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { convertDisk } from '../../src/disk/convert.js';

const FIXTURES = join(REPO_ROOT, '..', 'shared', 'fixtures', 'ovf');
const SCHEMA = join(REPO_ROOT, '..', 'shared', 'schemas', 'ovf-1.1.1', 'dsp8023_1.1.1.xsd');
const COUNTER = 4242n;
const PATTERN_OFFSET = 50 * 1024 * 1024;

interface Task<R = unknown> {
  state: string;
  result: R;
  error: { code: string; message: string } | null;
}
interface Vm {
  id: string;
  name: string;
  cpus: number;
  memoryBytes: number;
  nics: unknown[];
  disks: { diskId: string }[];
  cdroms: { id: string; path: string | null; bus: string }[];
  kernelImage: string | null;
}
interface Volume {
  id: string;
  vmId: string | null;
  path: string;
  sizeBytes: number;
}
interface Imported {
  vms: { id: string; name: string }[];
  group: string | null;
}
interface Exported {
  path: string;
  members: { name: string; sha256: string }[];
}

let d: TestDaemon;
let work: string;
let pattern: Buffer;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'fd-ovfd-'));
  // The daemon reads and writes appliances by path only in the directories its host names.
  d = await TestDaemon.start({ config: { importDirs: [work, FIXTURES], exportDirs: [work] } });
  const r = await d.cli(['image', 'build', 'tiny', '--probes']);
  assert.equal(r.code, 0, r.stderr);
  pattern = randomBytes(1024 * 1024);
  // The source VM: never booted; its disk gets a counter value and a random MiB through our
  // engine, so the export carries content that the tiny image does not have.
  await d.json(['vm', 'create', 'rt', '--image', 'tiny', '--cpus', '2', '--memory', '128M']);
  const disk = (await volumesOf('rt'))[0]!;
  const img = await VhdImage.open(disk.path, { write: true });
  try {
    await img.write(COUNTER_OFFSET_BYTES, counterRecord(COUNTER));
    await img.write(PATTERN_OFFSET, pattern);
    await img.flush();
  } finally {
    await img.close();
  }
});
after(async () => {
  await d?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

async function volumesOf(vm: string): Promise<Volume[]> {
  const { id } = await d.json<Vm>(['vm', 'show', vm]);
  return (await d.json<Volume[]>(['volume', 'list'])).filter((v) => v.vmId === id);
}

async function serialEvents(name: string): Promise<ProbeEvent[]> {
  const lines = (await d.json<{ serial: string[] }>(['vm', 'logs', name, '--lines', '3000'])).serial;
  return lines.map(parseProbeLine).filter((e): e is ProbeEvent => e !== null);
}

/** What must not change when an import fails: records and the pool's VM directories. */
async function footprint(): Promise<{ vms: string[]; volumes: string[]; dirs: string[] }> {
  const vms = (await d.json<Vm[]>(['vm', 'list'])).map((v) => v.name).sort();
  const volumes = (await d.json<Volume[]>(['volume', 'list'])).map((v) => v.path).sort();
  const dirs = (await readdir(join(d.dataDir, 'pools', 'default', 'vms'))).sort();
  return { vms, volumes, dirs };
}

async function failsLeavingNothing(args: string[], code: string): Promise<string> {
  const beforeFp = await footprint();
  const r = await d.cli([...args, '--json']);
  assert.equal(r.code, 1, `${args.join(' ')} should fail: ${r.stdout}${r.stderr}`);
  assert.match(r.stdout + r.stderr, new RegExp(code), `${args.join(' ')}: ${r.stdout}${r.stderr}`);
  assert.deepEqual(await footprint(), beforeFp, `${args.join(' ')} left something behind`);
  return r.stdout + r.stderr;
}

async function members(ova: string): Promise<string[]> {
  return (await run('tar', ['tf', ova])).stdout.trim().split('\n');
}

test('export then import: same hardware, byte-identical disk, and the imported VM boots with its data', async () => {
  const ova = join(work, 'rt.ova');
  const exp = await d.json<Task<Exported>>(['ovf', 'export', 'rt', '--out', ova]);
  assert.equal(exp.state, 'succeeded', JSON.stringify(exp.error));
  // Canonical order, SHA256 manifest that matches, schema-valid descriptor, a VMDK qemu-img accepts.
  assert.deepEqual(await members(ova), ['rt.ovf', 'rt.mf', 'rt-rt-disk0.vmdk']);
  const x = join(work, 'rt-x');
  await mkdir(x);
  await run('tar', ['xf', ova, '-C', x]);
  const mf = await readFile(join(x, 'rt.mf'), 'utf8');
  for (const name of ['rt.ovf', 'rt-rt-disk0.vmdk']) {
    const sum = createHash('sha256')
      .update(await readFile(join(x, name)))
      .digest('hex');
    assert.ok(mf.includes(`SHA256(${name})= ${sum}`), `${name} in the manifest: ${mf}`);
  }
  const xsd = await run('xmllint', ['--noout', '--nonet', '--schema', SCHEMA, join(x, 'rt.ovf')], { allowFail: true });
  assert.equal(xsd.code, 0, xsd.stderr);
  const check = await run('qemu-img', ['check', '-f', 'vmdk', join(x, 'rt-rt-disk0.vmdk')], { allowFail: true });
  assert.equal(check.code, 0, check.stdout + check.stderr);
  const orig = await d.json<Vm>(['vm', 'show', 'rt']);
  const origRaw = join(work, 'rt.raw');
  await convertDisk((await volumesOf('rt'))[0]!.path, origRaw, { to: 'raw' });
  const vmdkCmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', origRaw, join(x, 'rt-rt-disk0.vmdk')], {
    allowFail: true,
  });
  assert.equal(vmdkCmp.code, 0, vmdkCmp.stdout + vmdkCmp.stderr);

  const imp = await d.json<Task<Imported>>(['ovf', 'import', ova, '--name', 'rt2']);
  assert.equal(imp.state, 'succeeded', JSON.stringify(imp.error));
  const copy = await d.json<Vm>(['vm', 'show', 'rt2']);
  assert.equal(copy.cpus, orig.cpus);
  assert.equal(copy.memoryBytes, orig.memoryBytes);
  assert.equal(copy.nics.length, orig.nics.length);
  assert.equal(copy.disks.length, orig.disks.length);
  assert.equal(copy.kernelImage, 'tiny', 'fd:Config kernelImage made the trip');
  const [origVol] = await volumesOf('rt');
  const [copyVol] = await volumesOf('rt2');
  assert.equal(copyVol!.sizeBytes, origVol!.sizeBytes);
  // The original is a differencing VHD over the image (QEMU's vpc driver cannot read chains):
  // our engine flattened it above; qemu-img reads the imported VHD on its own.
  const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', origRaw, copyVol!.path], { allowFail: true });
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);

  // Boot 1: heartbeat, and the durable counter starts from the value written before export.
  await d.json(['vm', 'start', 'rt2']);
  const ev = await waitFor(
    'heartbeat and counter-start of the imported VM',
    async () => {
      const e = await serialEvents('rt2');
      return e.some((x) => x.kind === 'heartbeat') && e.some((x) => x.kind === 'counter-start') ? e : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  const start = ev.find((x) => x.kind === 'counter-start');
  assert.deepEqual(start, { kind: 'counter-start', n: COUNTER }, 'durable counter the guest found on its disk');
  const running = await d.cli(['ovf', 'export', 'rt2', '--out', join(work, 'running.ova')]);
  assert.equal(running.code, 1);
  assert.match(running.stderr, /FD_VM_RUNNING/);
  await assert.rejects(stat(join(work, 'running.ova')), /ENOENT/);
  await d.json(['vm', 'delete', 'rt2', '--force', 'true']);
});

test('--disk-format vhd with OVF 2: the VHD member imports to the same bytes', async () => {
  const ova = join(work, 'rt-vhd.ova');
  const exp = await d.json<Task<Exported>>([
    'ovf',
    'export',
    'rt',
    '--out',
    ova,
    '--disk-format',
    'vhd',
    '--ovf-version',
    '2',
  ]);
  assert.equal(exp.state, 'succeeded', JSON.stringify(exp.error));
  assert.deepEqual(await members(ova), ['rt-vhd.ovf', 'rt-vhd.mf', 'rt-vhd-rt-disk0.vhd']);
  const desc = (await run('tar', ['xOf', ova, 'rt-vhd.ovf'])).stdout;
  assert.match(desc, /xmlns="http:\/\/schemas.dmtf.org\/ovf\/envelope\/2"/);
  const imp = await d.json<Task<Imported>>(['ovf', 'import', ova, '--name', 'rt3']);
  assert.equal(imp.state, 'succeeded', JSON.stringify(imp.error));
  const cmp = await run(
    'qemu-img',
    ['compare', '-f', 'raw', '-F', 'vpc', join(work, 'rt.raw'), (await volumesOf('rt3'))[0]!.path],
    { allowFail: true },
  );
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  await d.json(['vm', 'delete', 'rt3']);
});

test('two VMs export as a collection, import as a group, and the group exports by name', async () => {
  await d.json(['vm', 'create', 'rt-b', '--image', 'tiny', '--memory', '160M']);
  const ova = join(work, 'pair.ova');
  const exp = await d.json<Task<Exported>>(['ovf', 'export', 'rt', 'rt-b', '--out', ova]);
  assert.equal(exp.state, 'succeeded', JSON.stringify(exp.error));
  assert.deepEqual(await members(ova), ['pair.ovf', 'pair.mf', 'pair-rt-disk0.vmdk', 'pair-rt-b-disk0.vmdk']);
  const imp = await d.json<Task<Imported>>(['ovf', 'import', ova, '--name', 'duo']);
  assert.equal(imp.state, 'succeeded', JSON.stringify(imp.error));
  assert.equal(imp.result.group, 'duo');
  assert.deepEqual(imp.result.vms.map((v) => v.name).sort(), ['duo-rt', 'duo-rt-b']);
  assert.equal((await d.json<Vm>(['vm', 'show', 'duo-rt-b'])).memoryBytes, 160 * 1024 * 1024);
  const again = join(work, 'duo.ova');
  const exp2 = await d.json<Task<Exported>>(['ovf', 'export', 'duo', '--out', again]);
  assert.equal(exp2.state, 'succeeded', JSON.stringify(exp2.error));
  const desc = (await run('tar', ['xOf', again, 'duo.ovf'])).stdout;
  assert.match(desc, /<VirtualSystemCollection ovf:id="duo">/);
  assert.equal(desc.match(/<VirtualSystem /g)?.length, 2);
  for (const n of ['duo-rt', 'duo-rt-b', 'rt-b']) await d.json(['vm', 'delete', n]);
});

/** A vendor-style appliance: EULA, typed properties, two deployment options, the rt disk. */
async function probeAppliance(): Promise<string> {
  const dir = join(work, 'probe');
  await mkdir(dir);
  await run('tar', ['xf', join(work, 'rt.ova'), '-C', dir, 'rt-rt-disk0.vmdk']);
  const item = (fields: string, cfg?: string): string =>
    `<Item${cfg ? ` ovf:configuration="${cfg}"` : ''}>${fields}</Item>`;
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
  xmlns:fd="https://flightdeck.dev/schema/ovf/1">
  <References><File ovf:href="rt-rt-disk0.vmdk" ovf:id="file1"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="64" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection><Info>nets</Info><Network ovf:name="VM Network"><Description>lan</Description></Network></NetworkSection>
  <DeploymentOptionSection><Info>sizes</Info>
    <Configuration ovf:default="true" ovf:id="small"><Label>small</Label><Description>1 CPU, 128 MB</Description></Configuration>
    <Configuration ovf:id="large"><Label>large</Label><Description>2 CPUs, 192 MB</Description></Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="probe-appliance">
    <Info>a probe</Info><Name>probe appliance</Name>
    <ProductSection><Info>product</Info><Product>Probe</Product>
      <Property ovf:key="hostname" ovf:type="string" ovf:userConfigurable="true" ovf:value="probe"/>
      <Property ovf:key="port" ovf:type="uint16" ovf:qualifiers="MaxValue(9000)" ovf:userConfigurable="true" ovf:value="80"/>
      <Property ovf:key="edition" ovf:type="string" ovf:userConfigurable="false" ovf:value="community"/>
    </ProductSection>
    <EulaSection><Info>license</Info><License>Run this probe only on Tuesdays.</License></EulaSection>
    <VirtualHardwareSection ovf:transport="iso"><Info>hardware</Info>
      ${item('<rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity>')}
      ${item('<rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity>', 'large')}
      ${item('<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>128</rasd:VirtualQuantity>')}
      ${item('<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>192</rasd:VirtualQuantity>', 'large')}
      ${item('<rasd:ElementName>scsi</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType>')}
      ${item('<rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType>')}
      ${item('<rasd:AutomaticAllocation>true</rasd:AutomaticAllocation><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType>')}
      <fd:Config ovf:required="false" fd:key="kernelImage" fd:value="tiny"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
  await writeFile(join(dir, 'probe.ovf'), xml);
  return join(dir, 'probe.ovf');
}

test('EULA, properties and deployment options: refusals first, then the guest sees its environment', async () => {
  const ovf = await probeAppliance();
  const eula = await failsLeavingNothing(['ovf', 'import', ovf, '--name', 'probe'], 'FD_OVF_EULA_NOT_ACCEPTED');
  assert.match(eula, /Run this probe only on Tuesdays/, 'the EULA text is in the error details');
  const unknown = await failsLeavingNothing(
    ['ovf', 'import', ovf, '--name', 'probe', '--accept-eula', '--prop', 'colour=red'],
    'FD_OVF_BAD_PROPERTY',
  );
  assert.match(unknown, /colour/);
  const typed = await failsLeavingNothing(
    ['ovf', 'import', ovf, '--name', 'probe', '--accept-eula', '--prop', 'port=9001'],
    'FD_OVF_BAD_PROPERTY',
  );
  assert.match(typed, /port must be at most 9000/);
  await failsLeavingNothing(
    ['ovf', 'import', ovf, '--name', 'probe', '--accept-eula', '--prop', 'edition=pro'],
    'FD_OVF_BAD_PROPERTY',
  );
  await failsLeavingNothing(
    ['ovf', 'import', ovf, '--name', 'probe', '--accept-eula', '--deployment', 'huge'],
    'FD_OVF_BAD_CONFIGURATION',
  );

  const imp = await d.json<Task<Imported>>([
    'ovf',
    'import',
    ovf,
    '--name',
    'probe',
    '--accept-eula',
    '--deployment',
    'large',
    '--prop',
    'hostname=web-1',
    '--prop',
    'port=8080',
  ]);
  assert.equal(imp.state, 'succeeded', JSON.stringify(imp.error));
  const vm = await d.json<Vm>(['vm', 'show', 'probe']);
  assert.equal(vm.cpus, 2, 'deployment option "large" chose 2 CPUs');
  assert.equal(vm.memoryBytes, 192 * 1024 * 1024);
  const envCd = vm.cdroms.find((c) => c.id === 'ovfenv');
  assert.equal(envCd?.bus, 'scsi');

  // Boot 2: the guest mounts the environment ISO and prints every property; its probes report
  // the CPUs and memory the deployment option chose.
  await d.json(['vm', 'start', 'probe']);
  const ev = await waitFor(
    'FD-OVFENV lines and FD-CPUS/FD-MEM of the probe appliance',
    async () => {
      const e = await serialEvents('probe');
      return e.filter((x) => x.kind === 'ovfenv').length >= 4 &&
        e.some((x) => x.kind === 'cpus') &&
        e.some((x) => x.kind === 'mem')
        ? e
        : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  const env = new Map(ev.flatMap((x) => (x.kind === 'ovfenv' ? [[x.key, x.value] as const] : [])));
  assert.equal(env.get('hostname'), 'web-1');
  assert.equal(env.get('port'), '8080');
  assert.equal(env.get('edition'), 'community', 'a non-configurable property keeps its default');
  assert.match(env.get('source') ?? '', /^\/dev\/sr/);
  const cpus = ev.filter((x) => x.kind === 'cpus').pop();
  assert.deepEqual(cpus, { kind: 'cpus', online: 2 });
  const mem = ev.filter((x) => x.kind === 'mem').pop();
  assert.ok(mem?.kind === 'mem' && mem.totalKib > 150 * 1024 && mem.totalKib <= 192 * 1024, JSON.stringify(mem));
  await d.json(['vm', 'delete', 'probe', '--force', 'true']);
});

test("a real fixture (COT's input.ovf): VMDK converted like qemu-img reads it, ISO copied, deployment options", async () => {
  const ovf = join(FIXTURES, 'cot', 'input.ovf');
  const def = await d.json<Task<Imported>>(['ovf', 'import', ovf, '--name', 'cot-default']);
  assert.equal(def.state, 'succeeded', JSON.stringify(def.error));
  const big = await d.json<Vm>(['vm', 'show', 'cot-default']);
  assert.deepEqual([big.cpus, big.memoryBytes, big.nics.length], [4, 4 * 1024 ** 3, 3]);
  const [vol] = await volumesOf('cot-default');
  assert.equal(vol!.sizeBytes, 1024 ** 3, 'DiskSection capacity 1 GiB');
  const cmp = await run(
    'qemu-img',
    ['compare', '-f', 'vpc', '-F', 'vmdk', vol!.path, join(FIXTURES, 'cot', 'input.vmdk')],
    {
      allowFail: true,
    },
  );
  assert.equal(cmp.code, 0, cmp.stdout + cmp.stderr);
  const iso = big.cdroms.find((c) => c.path?.endsWith('cd0.iso'));
  assert.ok(iso, JSON.stringify(big.cdroms));
  assert.deepEqual(await readFile(iso.path!), await readFile(join(FIXTURES, 'cot', 'input.iso')));

  const small = await d.json<Task<Imported>>([
    'ovf',
    'import',
    ovf,
    '--name',
    'cot-small',
    '--deployment',
    '1CPU-1GB-1NIC',
  ]);
  assert.equal(small.state, 'succeeded', JSON.stringify(small.error));
  const s = await d.json<Vm>(['vm', 'show', 'cot-small']);
  assert.deepEqual([s.cpus, s.memoryBytes, s.nics.length], [1, 1024 ** 3, 1]);
  for (const n of ['cot-default', 'cot-small']) await d.json(['vm', 'delete', n]);
});

test('bad inputs fail with their codes and leave no VM, disk or directory behind', async () => {
  await failsLeavingNothing(['ovf', 'import', join(work, 'nope.ova')], 'FD_OVF_NOT_FOUND');
  // A manifest whose disk digest is wrong: the disk converts completely before the mismatch
  // shows, so the import has files to clean up.
  const good = await readFile(join(work, 'rt.ova'));
  const at = good.indexOf('SHA256(rt-rt-disk0.vmdk)= ') + 'SHA256(rt-rt-disk0.vmdk)= '.length;
  const bad = Buffer.from(good);
  bad[at] = bad[at] === 0x30 ? 0x31 : 0x30;
  await writeFile(join(work, 'mismatch.ova'), bad);
  await failsLeavingNothing(['ovf', 'import', join(work, 'mismatch.ova'), '--name', 'mm'], 'FD_OVF_MANIFEST_MISMATCH');
  // A VMDK whose first compressed grain is damaged: the conversion fails partway through.
  const broken = Buffer.from(good);
  const grain = broken.indexOf('KDMV') + 128 * 512 + 12;
  broken.fill(0xa5, grain + 8, grain + 40);
  await writeFile(join(work, 'broken.ova'), broken);
  await failsLeavingNothing(['ovf', 'import', join(work, 'broken.ova'), '--name', 'br'], 'FD_VMDK_BAD_GRAIN');
  await failsLeavingNothing(['ovf', 'import', join(FIXTURES, 'pve-storage', 'XEE.ovf')], 'FD_OVF_DTD_REFUSED');
  await failsLeavingNothing(['ovf', 'import', join(work, 'rt.ova'), '--name', 'rt'], 'FD_VM_EXISTS');
  const rel = await d.api('POST', '/api/v1/appliances/actions/import', { file: 'rt.ova' });
  assert.equal(rel.status, 400);
  assert.match(JSON.stringify(rel.body), /FD_BAD_PATH/);
  const exists = await d.cli(['ovf', 'export', 'rt', '--out', join(work, 'rt.ova')]);
  assert.match(exists.stderr, /FD_FILE_EXISTS/);
  const noVm = await d.cli(['ovf', 'export', 'ghost', '--out', join(work, 'ghost.ova')]);
  assert.match(noVm.stderr, /FD_VM_NOT_FOUND/);
});

test('an appliance whose disk names host files is refused: a VMDK extent in an OVA, a linked disk beside an .ovf', async () => {
  // The exported package, its disk replaced by a VMDK descriptor whose extent is the host's token.
  const dir = join(work, 'evil');
  await mkdir(dir, { recursive: true });
  await run('tar', ['xf', join(work, 'rt.ova'), '-C', dir]);
  const diskName = (await readdir(dir)).find((n) => n.endsWith('.vmdk'))!;
  const descriptor = `# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 1 FLAT "${join(d.dataDir, 'token')}" 0\n`;
  await writeFile(join(dir, diskName), descriptor);
  const ovfName = (await readdir(dir)).find((n) => n.endsWith('.ovf'))!;
  const ovfText = (await readFile(join(dir, ovfName), 'utf8')).replace(
    new RegExp(`(ovf:href="${diskName}"[^>]*ovf:size=")\\d+`),
    `$1${Buffer.byteLength(descriptor)}`,
  );
  await writeFile(join(dir, ovfName), ovfText);
  await rm(join(dir, ovfName.replace(/\.ovf$/, '.mf')), { force: true });
  const evil = join(work, 'evil.ova');
  await run('tar', ['cf', evil, '-C', dir, ovfName, diskName]);
  await failsLeavingNothing(['ovf', 'import', evil, '--name', 'evil'], 'FD_DISK_EXTERNAL_REFERENCE');
  // An operator: host paths are refused, an upload is inspected and its disk refused the same way.
  const op = (await d.json<{ token: string }>(['token', 'create', 'appl-op', '--role', 'operator'])).token;
  const byPath = await d.api('POST', '/api/v1/appliances/actions/import', { file: evil }, op);
  assert.match(JSON.stringify(byPath.body), /FD_FORBIDDEN/);
  const up = await fetch(`${d.url}/api/v1/appliances/upload`, {
    method: 'POST',
    headers: { authorization: `Bearer ${op}`, 'content-type': 'application/octet-stream' },
    body: await readFile(evil),
  });
  const uploaded = (await up.json()) as { file: string };
  assert.equal(up.status, 200, JSON.stringify(uploaded));
  const fp = await footprint();
  const imp = await d.api(
    'POST',
    '/api/v1/appliances/actions/import?wait=true',
    { file: uploaded.file, name: 'evil' },
    op,
  );
  assert.equal((imp.body as Task).error?.code, 'FD_DISK_EXTERNAL_REFERENCE', JSON.stringify(imp.body));
  assert.deepEqual(await footprint(), fp);
  // The same package unpacked, its disk a link to a host file.
  await rm(join(dir, diskName));
  await symlink(join(d.dataDir, 'token'), join(dir, diskName));
  await failsLeavingNothing(['ovf', 'import', join(dir, ovfName), '--name', 'evil'], 'FD_OVF_UNSAFE_HREF');
});
