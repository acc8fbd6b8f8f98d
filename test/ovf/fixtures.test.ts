/**
 * Every file in ../shared/fixtures/ovf, read through `ovf inspect`'s path and pinned to what
 * its XML says (checked by hand once). A broken fixture must fail with its specific code.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { isFdError } from '../../src/core/errors.js';
import { inspectPackage, type InspectResult, type InspectedSystem } from '../../src/ovf/inspect.js';
import { validatePackage } from '../../src/ovf/validate.js';
import { ovfFixture } from './helpers.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

interface Expect {
  version: string;
  configuration?: string;
  systems: {
    name: string;
    os?: string;
    cim?: number;
    cpu: number;
    mem?: number;
    disks: [string | undefined, number | undefined, string | undefined][];
    nics: [string | undefined, string | undefined][];
    propKeys?: string[];
    eula: boolean;
    path?: string[];
  }[];
  warnings?: RegExp[];
  problems?: string[];
  /** Problem codes `ovf validate` reports for this fixture (besides the ones above). */
  validate: string[];
}

const VALID: Record<string, Expect> = {
  'cot/csr1000v.ovf': {
    version: '1.x',
    configuration: '1CPU-4GB',
    systems: [
      {
        name: 'Cisco CSR 1000V Cloud Services Router',
        os: 'Linux 2.6.x 64-Bit',
        cim: 100,
        cpu: 1,
        mem: 4 * GiB,
        disks: [['vmdisk1', 1 * GiB, 'input.vmdk']],
        nics: [
          ['GigabitEthernet1', 'VMXNET3 virtio'],
          ['GigabitEthernet2', 'VMXNET3 virtio'],
          ['GigabitEthernet3', 'VMXNET3 virtio'],
        ],
        eula: false,
      },
    ],
    validate: [],
  },
  'cot/input.ovf': {
    version: '1.x',
    configuration: '4CPU-4GB-3NIC',
    systems: [
      {
        name: 'test',
        os: 'Linux 2.6.x 64-Bit',
        cim: 100,
        cpu: 4,
        mem: 4096 * MiB,
        disks: [['vmdisk1', 1 * GiB, 'input.vmdk']],
        nics: [
          ['VM Network', 'VMXNET3'],
          ['VM Network', 'VMXNET3'],
          ['VM Network', 'VMXNET3'],
        ],
        propKeys: [
          'login-username',
          'login-password',
          'mgmt-ipv4-addr',
          'mgmt-ipv4-gateway',
          'hostname',
          'enable-ssh-server',
          'enable-http-server',
          'enable-https-server',
          'privilege-password',
          'domain-name',
        ],
        eula: false,
      },
    ],
    validate: [],
  },
  'cot/minimal.ovf': {
    version: '1.x',
    systems: [{ name: 'x', cpu: 1, disks: [], nics: [], eula: false }],
    warnings: [/no CPU item/, /no memory item/],
    validate: [],
  },
  'cot/ubuntu.2.0.ovf': {
    version: '2.x',
    systems: [
      {
        name: 'ubuntu',
        os: 'Ubuntu 64-Bit',
        cim: 94,
        cpu: 1,
        mem: 512 * MiB,
        disks: [['vmdisk1', 8 * GiB, 'ubuntu.2.0-disk1.vmdk']],
        nics: [['NAT', 'E1000']],
        eula: false,
      },
    ],
    validate: [],
  },
  'cot/v0.9.ovf': {
    version: '0.9',
    systems: [
      {
        name: 'foo',
        os: 'CentOS 64-bit',
        cim: 107,
        cpu: 1,
        mem: 8192 * MiB,
        disks: [['vmdisk1', 1073741824, 'input.vmdk']],
        nics: [['bridged', 'PCNet32']],
        eula: true,
      },
    ],
    validate: [],
  },
  'cot/vmware.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'vmw',
        os: 'RedHat Enterprise Linux 64-Bit',
        cim: 80,
        cpu: 2,
        mem: 1536 * MiB,
        disks: [['vmdisk1', 1 * GiB, 'input.vmdk']],
        nics: Array(4).fill(['lanethernet0', 'E1000']),
        propKeys: ['custom-property'],
        eula: false,
      },
    ],
    warnings: [/VMCI device.*vmware\.vmci.*skipped/],
    validate: [],
  },
  'govmomi/SLES11_SP2_64.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'SLES11_SP2_64_Venkat',
        os: 'SLES 64-Bit',
        cim: 85,
        cpu: 2,
        mem: 1 * GiB,
        disks: [['vmdisk-6316c111-ff20-4fc7-8fca-f37d798cdfc1-2000', 16 * GiB, 'SLES11_SP2_64-disk1.vmdk']],
        nics: [['VM network 1', 'E1000']],
        eula: false,
      },
    ],
    warnings: [/no namespace/],
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_MISSING_FILE'],
  },
  'govmomi/disk-capacity-property.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'disk-capacity-property-vm',
        cpu: 1,
        mem: 512 * MiB,
        disks: [['vmdisk_data', 5 * GiB, undefined]],
        nics: [],
        propKeys: ['disksize'],
        eula: false,
      },
    ],
    // The empty NetworkSection/DeploymentOptionSection lack the <Info> the schema requires.
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_SCHEMA'],
  },
  'govmomi/properties.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'test-vm',
        os: 'Ubuntu 64-Bit',
        cim: 94,
        cpu: 2,
        mem: 2 * GiB,
        disks: [],
        nics: [['VM Network', 'E1000']],
        propKeys: ['ntp-server', 'enable_ssh', 'nfs_mount', 'whitespace_int', 'vmname'],
        eula: false,
      },
    ],
    warnings: [/vmware\.vmci/],
    validate: [],
  },
  'govmomi/ttylinux.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'ttylinux-pc_i486-16.1',
        os: 'LINUX',
        cim: 36,
        cpu: 1,
        mem: 32 * MiB,
        disks: [['vmdisk1', 30 * MiB, 'ttylinux-pc_i486-16.1-disk1.vmdk']],
        nics: [['nat', 'E1000']],
        eula: false,
      },
    ],
    warnings: [/vmware\.vmci/],
    validate: ['FD_OVF_MISSING_FILE'],
  },
  'govmomi/vApp_with_2vms.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'sql2k5-win-2k3-32-ent-sp2-ovf',
        path: ['sql2k5-win-2k3-32-ent-sp2-ovf'],
        os: 'Microsoft Windows Server 2003',
        cim: 69,
        cpu: 1,
        mem: 1024 * MiB,
        disks: [['vmdisk-1e592958-26a9-4099-ba4f-ccdd6ad36335-2000', 10 * GiB, 'vApp_with_2vms-disk2.vmdk']],
        nics: [['Private', 'PCNet32']],
        eula: false,
      },
      {
        name: 'centos-5.5-32-esx-qa',
        path: ['sql2k5-win-2k3-32-ent-sp2-ovf'],
        os: 'LINUX',
        cim: 36,
        cpu: 1,
        mem: 256 * MiB,
        disks: [['vmdisk-8d158857-e2a0-4082-93bd-a2d154fd9a1d-2000', 4 * GiB, 'vApp_with_2vms-disk1.vmdk']],
        nics: [['none', 'E1000']],
        eula: false,
      },
    ],
    warnings: [/names both a collection and a virtual system/],
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_MISSING_FILE', 'FD_OVF_MISSING_FILE'],
  },
  'govmomi/virtualsystemcollection.ovf': {
    version: '2.x',
    systems: [
      {
        name: 'Virtual Appliance One',
        path: ['vsc1'],
        os: 'Windows 2000',
        cim: 58,
        cpu: 1,
        mem: 1 * GiB,
        disks: [[undefined, 1 * GiB, undefined]],
        nics: [['VS Network', undefined]],
        propKeys: ['adminemail', 'app_ip'],
        eula: true,
      },
      {
        name: 'Virtual Appliance Two',
        path: ['vsc1'],
        os: 'Windows 2000',
        cim: 58,
        cpu: 1,
        mem: 1 * GiB,
        disks: [[undefined, 1 * GiB, undefined]],
        nics: [['VS Network', undefined]],
        propKeys: ['adminemail', 'app_ip'],
        eula: true,
      },
    ],
    warnings: [/no DiskSection entry/, /no DiskSection entry/],
    validate: ['FD_OVF_MISSING_FILE'],
  },
  'pve-storage/Win10-Liz.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'Win10-Liz',
        os: 'Other',
        cim: 1,
        cpu: 4,
        mem: 6 * GiB,
        disks: [['vmdisk1', 128 * GiB, 'Win10-Liz-disk1.vmdk']],
        nics: [['bridged', 'E1000e']],
        eula: false,
      },
    ],
    warnings: [/vmware\.vmci/],
    // The fixture ships a 64 KiB stand-in for a 9 GB disk.
    validate: ['FD_OVF_SIZE_MISMATCH'],
  },
  'pve-storage/Win_2008_R2_two-disks.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'Win_2008-R2x64',
        os: 'Microsoft Windows Server 2008 R2',
        cim: 103,
        cpu: 1,
        mem: 2 * GiB,
        disks: [
          ['vmdisk1', 40 * GiB, 'disk1.vmdk'],
          ['vmdisk2', 1 * GiB, 'disk2.vmdk'],
        ],
        nics: [['bridged', 'E1000']],
        eula: false,
      },
    ],
    warnings: [/vmware\.vmci/],
    validate: ['FD_OVF_SIZE_MISMATCH', 'FD_OVF_SIZE_MISMATCH'],
  },
  'virtualbox/winxp.ovf': {
    version: '1.x',
    systems: [
      {
        name: 'Windows 5.1 XP 1',
        os: 'Windows XP',
        cim: 67,
        cpu: 1,
        mem: 895 * MiB,
        disks: [
          ['vmdisk1', 10485760000, 'Windows 5.1 XP 1 merged.vmdk'],
          ['vmdisk2', 2 * GiB, 'smallvdi.vmdk'],
        ],
        nics: [['NAT', 'PCNet32']],
        eula: false,
      },
    ],
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_MISSING_FILE', 'FD_OVF_MISSING_FILE'],
  },
  'glance/testserver.ova': {
    version: '1.x',
    systems: [
      {
        name: 'testserver',
        os: 'Ubuntu 64-Bit',
        cim: 94,
        cpu: 1,
        mem: 512 * MiB,
        disks: [['vmdisk2', 8 * GiB, 'testserver-disk1.vmdk']],
        nics: [['NAT', 'E1000']],
        eula: false,
      },
    ],
    warnings: [/ResourceAllocationSection/],
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_SCHEMA'],
  },
  'cot/invalid.ovf': {
    version: '1.x',
    configuration: 'myprofile',
    systems: [
      {
        name: 'x',
        cpu: 3,
        disks: [],
        nics: [['This is a rather verbose network name, eh what?', undefined]],
        propKeys: ['jabberwock', 'frobozz-is-a-magic-word-I-think'],
        eula: false,
      },
    ],
    warnings: [/no memory item/],
    problems: ['FD_OVF_BAD_REFERENCE', 'FD_OVF_BAD_REFERENCE', 'FD_OVF_BAD_REFERENCE'],
    validate: ['FD_OVF_SCHEMA', 'FD_OVF_MISSING_FILE'],
  },
};

const BROKEN: Record<string, string> = {
  'pve-storage/XEE.ovf': 'FD_OVF_DTD_REFUSED',
  'govmomi/jeos_corrupted.ovf': 'FD_OVF_BAD_XML',
  'glance/testserver-bad-ovf.ova': 'FD_OVF_BAD_XML',
  'glance/testserver-not-tar.ova': 'FD_OVA_NOT_TAR',
};

/** Files that are not descriptors or packages themselves; they are covered via the OVFs above. */
const SUPPORTING: Record<string, string> = {
  'SOURCES.md': 'documentation',
  'cot/input.iso': 'input.ovf / csr1000v.ovf CD image: digest checked by validate(input.ovf)',
  'cot/input.mf': 'manifest checked by validate(input.ovf)',
  'cot/sample_cfg.txt': 'referenced file checked by validate(input.ovf)',
  'cot/input.vmdk': 'streamOptimized reader tests (src/disk/vmdk)',
  'cot/ubuntu.2.0-disk1.vmdk': 'streamOptimized reader tests (src/disk/vmdk)',
  'cot/ubuntu.2.0.mf': 'manifest checked by validate(ubuntu.2.0.ovf)',
  'pve-storage/Win10-Liz-disk1.vmdk':
    'size mismatch reported by validate(Win10-Liz.ovf); monolithicSparse refusal test',
  'pve-storage/disk1.vmdk': 'size mismatch reported by validate(Win_2008_R2_two-disks.ovf)',
  'pve-storage/disk2.vmdk': 'size mismatch reported by validate(Win_2008_R2_two-disks.ovf)',
};

function pick(s: InspectedSystem): Expect['systems'][number] {
  return {
    name: s.name,
    ...(s.os !== undefined ? { os: s.os } : {}),
    ...(s.osCimId !== undefined ? { cim: s.osCimId } : {}),
    cpu: s.vcpus,
    ...(s.memoryBytes !== undefined ? { mem: s.memoryBytes } : {}),
    disks: s.disks.map((d) => [d.diskId, d.capacityBytes, d.file]),
    nics: s.nics.map((n) => [n.network, n.adapterType]),
    eula: s.eula,
  };
}

test('every fixture file is covered by this test', () => {
  const root = ovfFixture('.');
  const all: string[] = [];
  const walk = (d: string): void => {
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else all.push(relative(root, p));
    }
  };
  walk(root);
  const covered = new Set([...Object.keys(VALID), ...Object.keys(BROKEN), ...Object.keys(SUPPORTING)]);
  assert.deepEqual(
    all.filter((f) => !covered.has(f)),
    [],
    'fixtures without a pinned expectation',
  );
});

for (const [file, want] of Object.entries(VALID)) {
  test(`inspect ${file} gives the values its XML says`, async () => {
    const r: InspectResult = await inspectPackage(ovfFixture(file));
    assert.equal(r.ovfVersion, want.version);
    assert.equal(r.configuration, want.configuration);
    assert.equal(r.systems.length, want.systems.length);
    r.systems.forEach((s, i) => {
      const w = want.systems[i]!;
      const { propKeys, path, ...plain } = w;
      assert.deepEqual(pick(s), plain);
      if (propKeys)
        assert.deepEqual(
          s.properties.map((p) => p.key),
          propKeys,
        );
      if (path) assert.deepEqual(s.path, path);
    });
    assert.equal(r.warnings.length, (want.warnings ?? []).length, `warnings: ${r.warnings.join(' | ')}`);
    (want.warnings ?? []).forEach((re, i) => assert.match(r.warnings[i]!, re));
    assert.deepEqual(
      r.problems.map((p) => p.code),
      want.problems ?? [],
    );
  });

  test(`validate ${file} reports exactly its known problems`, async () => {
    const r = await validatePackage(ovfFixture(file));
    const codes = r.problems.map((p) => p.slice(0, p.indexOf(':')));
    assert.deepEqual(codes.sort(), [...(want.problems ?? []), ...want.validate].sort(), r.problems.join('\n'));
  });
}

for (const [file, code] of Object.entries(BROKEN)) {
  test(`${file} is refused with ${code}`, async () => {
    await assert.rejects(inspectPackage(ovfFixture(file)), (err) => isFdError(err, code as `FD_${string}`));
    const v = await validatePackage(ovfFixture(file));
    assert.equal(v.problems.length, 1);
    assert.match(v.problems[0]!, new RegExp(`^${code}: `));
  });
}

test('XEE.ovf: the external entity is never resolved (nothing from /proc leaks into an error)', async () => {
  const err = await inspectPackage(ovfFixture('pve-storage/XEE.ovf')).catch((e: unknown) => e);
  assert.ok(isFdError(err, 'FD_OVF_DTD_REFUSED'));
  assert.doesNotMatch(err.message, /node|flightdeck/);
});

test('csr1000v: choosing a deployment option changes CPUs and memory', async () => {
  const r = await inspectPackage(ovfFixture('cot/csr1000v.ovf'), { configuration: '4CPU-8GB' });
  assert.equal(r.systems[0]!.vcpus, 4);
  assert.equal(r.systems[0]!.memoryBytes, 8 * GiB);
  await assert.rejects(inspectPackage(ovfFixture('cot/csr1000v.ovf'), { configuration: 'nope' }), (e) =>
    isFdError(e, 'FD_OVF_BAD_CONFIGURATION'),
  );
});

test('input.ovf: the 1-NIC option drops the config-specific NICs and keeps the generic items', async () => {
  const r = await inspectPackage(ovfFixture('cot/input.ovf'), { configuration: '1CPU-1GB-1NIC' });
  const s = r.systems[0]!;
  assert.equal(s.vcpus, 1);
  assert.equal(s.memoryBytes, 1024 * MiB);
  assert.equal(s.nics.length, 1);
  assert.deepEqual(s.drives, [{ kind: 'cdrom', file: 'input.iso' }, { kind: 'cdrom' }]);
});

test('disk-capacity-property: a user-given property value resizes the ${disksize} disk', async () => {
  const r = await inspectPackage(ovfFixture('govmomi/disk-capacity-property.ovf'), { properties: { disksize: '12' } });
  assert.equal(r.systems[0]!.disks[0]!.capacityBytes, 12 * GiB);
});

test('vApp_with_2vms: the collection keeps its startup section', async () => {
  const r = await inspectPackage(ovfFixture('govmomi/vApp_with_2vms.ovf'));
  assert.deepEqual(
    r.startupOrder?.map((s) => s.id),
    ['sql2k5-win-2k3-32-ent-sp2-ovf', 'centos-5.5-32-esx-qa'],
  );
  assert.equal(r.model.entity.kind, 'VirtualSystemCollection');
});

test('ubuntu.2.0: the vbox:Machine blob is kept as an opaque extension', async () => {
  const r = await inspectPackage(ovfFixture('cot/ubuntu.2.0.ovf'));
  const vs = r.model.entity;
  assert.equal(vs.kind, 'VirtualSystem');
  const machine = vs.extensions.find((e) => e.name === 'Machine');
  assert.equal(machine?.namespace, 'http://www.virtualbox.org/ovf/machine');
  assert.match(machine!.xml, /^<vbox:Machine xmlns:vbox="http:\/\/www\.virtualbox\.org\/ovf\/machine"/);
  assert.match(machine!.xml, /RAMSize="512"/);
});

test('csr1000v: properties keep class/instance keys, qualifiers and types', async () => {
  const r = await inspectPackage(ovfFixture('cot/csr1000v.ovf'));
  const p = r.systems[0]!.properties.find((x) => x.key === 'hostname')!;
  assert.equal(p.fullKey, 'com.cisco.csr1000v.hostname.1');
  assert.equal(p.qualifiers, 'MaxLen(63)');
  assert.equal(p.userConfigurable, true);
  assert.equal(p.category, '1. Bootstrap Properties');
  const ssh = r.systems[0]!.properties.find((x) => x.key === 'enable-ssh-server')!;
  assert.equal(ssh.type, 'boolean');
  assert.equal(ssh.defaultValue, 'false');
  assert.deepEqual(r.model.entity.kind === 'VirtualSystem' && r.model.entity.transport, ['iso']);
});

test('v0.9: EULA and annotation text come through', async () => {
  const r = await inspectPackage(ovfFixture('cot/v0.9.ovf'));
  const vs = r.model.entity;
  assert.equal(vs.kind, 'VirtualSystem');
  assert.match(vs.eulas[0]!, /^Licensing text, oh licensing text!/);
  assert.match(vs.annotation!, /^Hello world! This is a version 0\.9 OVF\./);
});
