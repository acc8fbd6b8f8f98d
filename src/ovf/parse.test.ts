import { test } from 'node:test';
import assert from 'node:assert/strict';
import { virtualSystems } from './model.js';
import { parseOvf } from './parse.js';

const NESTED = `<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References/>
  <DeploymentOptionSection><Info>options</Info>
    <Configuration ovf:id="small"><Label>small</Label><Description>small</Description></Configuration>
    <Configuration ovf:id="big" ovf:default="true"><Label>big</Label><Description>big</Description></Configuration>
  </DeploymentOptionSection>
  <VirtualSystemCollection ovf:id="outer"><Info>outer</Info>
    <StartupSection><Info>order</Info>
      <Item ovf:id="inner" ovf:order="1" ovf:startDelay="30" ovf:waitingForGuest="true"/>
      <Item ovf:id="db" ovf:order="0" ovf:startDelay="5" ovf:stopDelay="10"/>
    </StartupSection>
    <VirtualSystem ovf:id="db"><Info>db</Info>
      <ProductSection ovf:class="org.example" ovf:instance="1"><Info>p</Info>
        <Property ovf:key="mem" ovf:type="uint32" ovf:value="1" ovf:userConfigurable="true">
          <Value ovf:value="8" ovf:configuration="big"/>
        </Property>
      </ProductSection>
      <VirtualHardwareSection><Info>hw</Info>
        <Item><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
        <Item ovf:configuration="big"><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>
        <Item ovf:bound="max"><rasd:ElementName>cpu</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>64</rasd:VirtualQuantity></Item>
        <Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
        <Item><rasd:ElementName>nvme</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>vmware.nvme.controller</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
        <Item><rasd:ElementName>tape</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>18</rasd:ResourceType></Item>
        <Item ovf:required="false"><rasd:ElementName>firewire</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>25</rasd:ResourceType></Item>
      </VirtualHardwareSection>
    </VirtualSystem>
    <VirtualSystemCollection ovf:id="inner"><Info>inner</Info>
      <VirtualSystem ovf:id="web1"><Info>w</Info><VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection></VirtualSystem>
      <VirtualSystem ovf:id="web2"><Info>w</Info><VirtualHardwareSection><Info>hw</Info></VirtualHardwareSection></VirtualSystem>
    </VirtualSystemCollection>
  </VirtualSystemCollection>
</Envelope>`;

test('nested collections keep their tree, startup order and every system', () => {
  const env = parseOvf(NESTED);
  assert.equal(env.entity.kind, 'VirtualSystemCollection');
  assert.deepEqual(
    virtualSystems(env.entity).map((v) => v.id),
    ['db', 'web1', 'web2'],
  );
  const outer = env.entity;
  assert.ok(outer.kind === 'VirtualSystemCollection');
  assert.deepEqual(
    outer.startup.map((s) => [s.id, s.order, s.startDelayS, s.stopDelayS, s.waitingForGuest]),
    [
      ['db', 0, 5, 10, false],
      ['inner', 1, 30, 0, true],
    ],
  );
  assert.equal(outer.members[1]!.kind, 'VirtualSystemCollection');
});

test('the deployment option picks items and property values; bound="max" items are ignored', () => {
  const big = parseOvf(NESTED);
  const db = virtualSystems(big.entity)[0]!;
  assert.equal(big.configuration, 'big');
  assert.equal(db.vcpus, 8);
  assert.equal(db.memoryBytes, 2 * 2 ** 30);
  assert.equal(db.products[0]!.properties[0]!.defaultValue, '8');
  assert.equal(db.products[0]!.properties[0]!.fullKey, 'org.example.mem.1');
  const small = parseOvf(NESTED, { configuration: 'small' });
  const db2 = virtualSystems(small.entity)[0]!;
  assert.equal(db2.vcpus, 1);
  assert.equal(db2.products[0]!.properties[0]!.defaultValue, '1');
});

test('an NVMe controller maps; a required tape drive is a problem; an optional FireWire port a warning', () => {
  const env = parseOvf(NESTED);
  const db = virtualSystems(env.entity)[0]!;
  assert.deepEqual(
    db.controllers.map((c) => [c.kind, c.subtype]),
    [['nvme', 'vmware.nvme.controller']],
  );
  assert.deepEqual(
    env.problems.map((p) => p.code),
    ['FD_OVF_UNSUPPORTED_DEVICE'],
  );
  assert.match(env.problems[0]!.message, /item 4 \(tape\): required resource type 18/);
  assert.ok(env.warnings.some((w) => /item 5 \(firewire\): optional resource type 25 .* skipped/.test(w)));
});

test('memory without AllocationUnits: small numbers are MiB (with a warning), big ones bytes', () => {
  const env = (q: string): string =>
    `<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">` +
    `<VirtualSystem ovf:id="m"><Info/><VirtualHardwareSection><Info/><Item><rasd:ElementName>mem</rasd:ElementName>` +
    `<rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>${q}</rasd:VirtualQuantity>` +
    `</Item></VirtualHardwareSection></VirtualSystem></Envelope>`;
  const small = parseOvf(env('512'));
  assert.equal(virtualSystems(small.entity)[0]!.memoryBytes, 512 * 2 ** 20);
  assert.ok(small.warnings.some((w) => /no AllocationUnits; 512 read as MiB/.test(w)));
  const big = parseOvf(env(String(2 ** 31)));
  assert.equal(virtualSystems(big.entity)[0]!.memoryBytes, 2 ** 31);
  const junk = parseOvf(env('lots'));
  assert.deepEqual(
    junk.problems.map((p) => p.code),
    ['FD_OVF_BAD_MEMORY'],
  );
});

/** VMware-written OVF 0.9 (ovftool of the ESX 3.5 era): default namespace, xsi:type-typed Section and
 * Content elements, a collection around the system, a disk in the "vmdk.html#compressed" format. */
const VMWARE_09 = `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://www.vmware.com/schema/ovf/1/envelope" xmlns:ovf="http://www.vmware.com/schema/ovf/1/envelope" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ovf:version="0.9">
  <References>
    <File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="65536"/>
  </References>
  <Section xsi:type="ovf:DiskSection_Type">
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="1073741824" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/specifications/vmdk.html#compressed"/>
  </Section>
  <Section xsi:type="ovf:NetworkSection_Type">
    <Info>List of logical networks used in the package</Info>
    <Network ovf:name="VM Network"><Description>The VM Network network</Description></Network>
  </Section>
  <Content ovf:id="app" xsi:type="ovf:VirtualSystemCollection_Type">
    <Info>A collection of virtual machines</Info>
    <Section xsi:type="ovf:ProductSection_Type">
      <Info>Product</Info>
      <Product>Web App</Product>
      <Vendor>Example</Vendor>
      <Version>1.0</Version>
    </Section>
    <Content ovf:id="web" xsi:type="ovf:VirtualSystem_Type">
      <Info>A virtual machine</Info>
      <Section ovf:id="36" xsi:type="ovf:OperatingSystemSection_Type" vmw:osType="otherLinuxGuest"><Info>The kind of installed guest operating system</Info></Section>
      <Section xsi:type="ovf:VirtualHardwareSection_Type">
        <Info>Virtual hardware requirements for a virtual machine</Info>
        <System><vssd:InstanceId>0</vssd:InstanceId><vssd:VirtualSystemIdentifier>web</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>vmx-04</vssd:VirtualSystemType></System>
        <Item><rasd:Caption>1 virtual CPU</rasd:Caption><rasd:InstanceId>1</rasd:InstanceId><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
        <Item><rasd:Caption>256MB of memory</rasd:Caption><rasd:InstanceId>2</rasd:InstanceId><rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits><rasd:VirtualQuantity>256</rasd:VirtualQuantity></Item>
        <Item><rasd:Caption>scsiController0</rasd:Caption><rasd:InstanceId>3</rasd:InstanceId><rasd:ResourceType>6</rasd:ResourceType><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:BusNumber>0</rasd:BusNumber></Item>
        <Item><rasd:Caption>disk1</rasd:Caption><rasd:InstanceId>4</rasd:InstanceId><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>/disk/vmdisk1</rasd:HostResource><rasd:Parent>3</rasd:Parent><rasd:AddressOnParent>0</rasd:AddressOnParent></Item>
        <Item><rasd:Caption>ethernet0</rasd:Caption><rasd:InstanceId>5</rasd:InstanceId><rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>PCNet32</rasd:ResourceSubType><rasd:Connection>VM Network</rasd:Connection><rasd:AutomaticAllocation>true</rasd:AutomaticAllocation></Item>
      </Section>
    </Content>
  </Content>
</Envelope>`;

test('OVF 0.9 as VMware wrote it: xsi:type sections and contents, a collection, #compressed disks', () => {
  const env = parseOvf(VMWARE_09, { source: 'vmware-0.9.ovf' });
  assert.equal(env.version, '0.9');
  assert.deepEqual(env.problems, []);
  assert.equal(env.entity.kind, 'VirtualSystemCollection');
  const [web] = virtualSystems(env.entity);
  assert.equal(web?.id, 'web');
  assert.equal(web?.vcpus, 1);
  assert.equal(web?.memoryBytes, 256 * 1024 * 1024);
  assert.equal(web?.os?.vendorType, 'otherLinuxGuest');
  assert.equal(env.disks[0]?.formatKind, 'vmdk-streamOptimized', 'VMware 0.9 "#compressed" is a streamOptimized VMDK');
  assert.equal(env.disks[0]?.capacityBytes, 1024 ** 3);
  assert.equal(env.networks[0]?.name, 'VM Network');
  assert.deepEqual(env.warnings, []);
});
