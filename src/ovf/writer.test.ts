import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ovfFixture, repoRoot } from '../../test/ovf/helpers.js';
import { virtualSystems, type OvfEnvelope } from './model.js';
import { parseOvf } from './parse.js';
import { envelopeSchema, validateSchema } from './schema.js';
import { writeOvf } from './writer.js';

const FIXTURES = [
  'cot/csr1000v.ovf',
  'cot/input.ovf',
  'cot/minimal.ovf',
  'cot/ubuntu.2.0.ovf',
  'cot/v0.9.ovf',
  'cot/vmware.ovf',
  'govmomi/SLES11_SP2_64.ovf',
  'govmomi/disk-capacity-property.ovf',
  'govmomi/properties.ovf',
  'govmomi/ttylinux.ovf',
  'govmomi/vApp_with_2vms.ovf',
  'govmomi/virtualsystemcollection.ovf',
  'pve-storage/Win10-Liz.ovf',
  'pve-storage/Win_2008_R2_two-disks.ovf',
  'virtualbox/winxp.ovf',
];

/** What an import depends on, per system. */
function hardware(env: OvfEnvelope) {
  return virtualSystems(env.entity).map((vs) => ({
    name: vs.name,
    // The writer fills what the schema requires: an OS id (1, "Other") and one vCPU.
    os: vs.os?.cimId ?? 1,
    cpu: vs.vcpus ?? 1,
    mem: vs.memoryBytes,
    disks: vs.disks.map((d) => [
      d.diskId,
      env.disks.find((x) => x.diskId === d.diskId)?.capacityBytes ?? d.capacityBytes,
    ]),
    nics: vs.nics.map((n) => [n.network, n.adapterType]),
    props: vs.products.flatMap((p) => p.properties.map((x) => [x.fullKey, x.type, x.defaultValue, x.userConfigurable])),
    eulas: vs.eulas,
  }));
}

for (const f of FIXTURES) {
  test(`${f} rewritten as OVF 1.x passes the DMTF schema and reads back with the same hardware`, async () => {
    const env = parseOvf(await readFile(ovfFixture(f), 'utf8'));
    const xml = writeOvf(env, { ovfVersion: 1 });
    const res = await validateSchema(xml, '1.x', f);
    assert.ok(res.schema, 'a schema was used');
    assert.deepEqual(res.errors, []);
    const back = parseOvf(xml);
    assert.deepEqual(hardware(back), hardware(env));
    assert.equal(back.entity.kind, env.entity.kind);
  });
}

test('the vendored schemas are byte-identical to ../shared/schemas', async () => {
  for (const name of [
    'dsp8023_1.1.1.xsd',
    'common.xsd',
    'CIM_VirtualSystemSettingData.xsd',
    'CIM_ResourceAllocationSettingData.xsd',
    'xml.xsd',
  ]) {
    const vendored = await readFile(join(repoRoot(), 'src', 'ovf', 'schemas', 'ovf-1.1.1', name));
    const shared = await readFile(join(repoRoot(), '..', 'shared', 'schemas', 'ovf-1.1.1', name));
    assert.ok(vendored.equals(shared), name);
  }
});

test('without ../shared the vendored schema is used', async () => {
  const old = process.env.FLIGHTDECK_OVF_SCHEMAS;
  try {
    process.env.FLIGHTDECK_OVF_SCHEMAS = join(repoRoot(), 'src', 'ovf', 'schemas');
    assert.equal(envelopeSchema('1.x'), join(repoRoot(), 'src', 'ovf', 'schemas', 'ovf-1.1.1', 'dsp8023_1.1.1.xsd'));
    assert.equal(envelopeSchema('2.x'), undefined);
  } finally {
    if (old === undefined) delete process.env.FLIGHTDECK_OVF_SCHEMAS;
    else process.env.FLIGHTDECK_OVF_SCHEMAS = old;
  }
});

test('a schema violation is reported with its line', async () => {
  const env = parseOvf(await readFile(ovfFixture('cot/minimal.ovf'), 'utf8'));
  const xml = writeOvf(env).replace('<Info>A virtual machine</Info>', '<Bogus/>');
  const res = await validateSchema(xml, '1.x', 'x.ovf');
  assert.equal(res.errors.length, 1);
  assert.match(res.errors[0]!, /^x\.ovf:\d+: element Bogus: Schemas validity error/);
});
