/**
 * Normalized model -> OVF 1.x or 2.x descriptor that passes the DMTF schema and that ovftool,
 * vCenter and VirtualBox import. RASD children are written in the schema's (alphabetical)
 * order; item InstanceIDs are renumbered so they are unique and Parent links follow them.
 */
import { cimOsId } from './cim-os.js';
import type { OvfCollection, OvfEntity, OvfEnvelope, OvfProduct, OvfVirtualSystem } from './model.js';
import { OVF_NS_1, OVF_NS_2, RASD_NS, VSSD_NS, VMW_NS } from './namespaces.js';
import { serializeXml, type OutElement } from './xml.js';

export interface WriteOvfOptions {
  /** OVF major version: 1 (DSP0243 1.1, the widest accepted) or 2. */
  ovfVersion?: 1 | 2;
  /** Producer comment written at the top. */
  producer?: string;
}

/** The parts of an envelope the writer needs; a parsed OvfEnvelope fits as is. */
export type OvfWriteModel = Pick<OvfEnvelope, 'files' | 'disks' | 'networks' | 'configurations' | 'entity'> & {
  lang?: string;
};

const el = (name: string, attrs?: OutElement['attrs'], children?: OutElement['children']): OutElement => ({
  name,
  ...(attrs ? { attrs } : {}),
  ...(children ? { children } : {}),
});
const txt = (name: string, text: string | number | undefined): OutElement | undefined =>
  text === undefined ? undefined : { name, text: String(text) };

export function writeOvf(model: OvfWriteModel, opts: WriteOvfOptions = {}): string {
  const v = opts.ovfVersion ?? 1;
  const ns = v === 2 ? OVF_NS_2 : OVF_NS_1;
  const root = el(
    'Envelope',
    [
      ['ovf:version', v === 2 ? '2.0' : '1.0'],
      ['xml:lang', model.lang ?? 'en-US'],
      ['xmlns', ns],
      ['xmlns:ovf', ns],
      ['xmlns:rasd', RASD_NS],
      ['xmlns:vssd', VSSD_NS],
      ['xmlns:vmw', VMW_NS],
    ],
    [
      el(
        'References',
        undefined,
        model.files.map((f) =>
          el('File', [
            ['ovf:href', f.href],
            ['ovf:id', f.id],
            ['ovf:size', f.sizeBytes],
            ['ovf:compression', f.compression],
            ['ovf:chunkSize', f.chunkSizeBytes],
          ]),
        ),
      ),
      model.disks.length > 0 &&
        el('DiskSection', undefined, [
          txt('Info', 'Virtual disk information'),
          ...model.disks.map((d) =>
            el('Disk', [
              ['ovf:capacity', d.capacityBytes ?? 0],
              ['ovf:capacityAllocationUnits', 'byte'],
              ['ovf:diskId', d.diskId],
              ['ovf:fileRef', d.fileRef],
              ['ovf:format', d.format ?? formatUrl(d.formatKind)],
              ['ovf:populatedSize', d.populatedSizeBytes],
              ['ovf:parentRef', d.parentRef],
            ]),
          ),
        ]),
      model.networks.length > 0 &&
        el('NetworkSection', undefined, [
          txt('Info', 'The list of logical networks'),
          ...model.networks.map((n) =>
            el('Network', [['ovf:name', n.name]], [txt('Description', n.description ?? `The ${n.name} network`)]),
          ),
        ]),
      model.configurations.length > 0 &&
        el('DeploymentOptionSection', undefined, [
          txt('Info', 'Deployment options'),
          ...model.configurations.map((c) =>
            el(
              'Configuration',
              [
                ['ovf:default', c.default ? 'true' : undefined],
                ['ovf:id', c.id],
              ],
              [txt('Label', c.label ?? c.id), txt('Description', c.description ?? c.label ?? c.id)],
            ),
          ),
        ]),
      entity(model.entity),
    ],
  );
  const xml = serializeXml(root);
  if (!opts.producer) return xml;
  const nl = xml.indexOf('\n') + 1;
  return `${xml.slice(0, nl)}<!--${opts.producer.replace(/--/g, '- -')}-->\n${xml.slice(nl)}`;
}

function formatUrl(kind: string): string | undefined {
  switch (kind) {
    case 'vmdk-streamOptimized':
      return 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';
    case 'vmdk-sparse':
      return 'http://www.vmware.com/interfaces/specifications/vmdk.html#sparse';
    case 'vhd':
      return 'http://technet.microsoft.com/en-us/virtualserver/bb676673.aspx';
    case 'qcow2':
      return 'http://www.gnome.org/~markmc/qcow-image-format.html';
    case 'raw':
      return 'http://en.wikipedia.org/wiki/Raw_image_format';
    default:
      return undefined;
  }
}

function entity(e: OvfEntity): OutElement {
  return e.kind === 'VirtualSystem' ? virtualSystem(e) : collection(e);
}

function common(e: OvfEntity): (OutElement | undefined)[] {
  return [
    ...e.products.map(product),
    e.annotation !== undefined
      ? el('AnnotationSection', undefined, [
          txt('Info', 'A human-readable annotation'),
          txt('Annotation', e.annotation),
        ])
      : undefined,
    ...e.eulas.map((l) => el('EulaSection', undefined, [txt('Info', 'License agreement'), txt('License', l)])),
  ];
}

function collection(c: OvfCollection): OutElement {
  return el(
    'VirtualSystemCollection',
    [['ovf:id', c.id]],
    [
      txt('Info', c.info ?? 'A collection of virtual machines'),
      txt('Name', c.name),
      ...common(c),
      c.startup.length > 0 &&
        el('StartupSection', undefined, [
          txt('Info', 'Startup order of the virtual machines'),
          ...c.startup.map((s) =>
            el('Item', [
              ['ovf:id', s.id],
              ['ovf:order', s.order],
              ['ovf:startDelay', s.startDelayS],
              ['ovf:waitingForGuest', s.waitingForGuest ? 'true' : undefined],
              ['ovf:stopDelay', s.stopDelayS],
              ['ovf:startAction', s.startAction],
              ['ovf:stopAction', s.stopAction],
            ]),
          ),
        ]),
      ...c.members.map(entity),
    ],
  );
}

function product(p: OvfProduct): OutElement {
  const children: (OutElement | undefined)[] = [
    txt('Info', 'Information about the installed software'),
    txt('Product', p.product),
    txt('Vendor', p.vendor),
    txt('Version', p.version),
    txt('FullVersion', p.fullVersion),
    txt('ProductUrl', p.productUrl),
    txt('VendorUrl', p.vendorUrl),
    txt('AppUrl', p.appUrl),
  ];
  let category: string | undefined;
  for (const prop of p.properties) {
    if (prop.category !== undefined && prop.category !== category) {
      category = prop.category;
      children.push(txt('Category', category));
    }
    children.push(
      el(
        'Property',
        [
          ['ovf:key', prop.key],
          ['ovf:password', prop.password ? 'true' : undefined],
          ['ovf:qualifiers', prop.qualifiers],
          ['ovf:type', prop.type],
          ['ovf:userConfigurable', prop.userConfigurable ? 'true' : 'false'],
          ['ovf:value', prop.defaultValue],
        ],
        [txt('Label', prop.label), txt('Description', prop.description)],
      ),
    );
  }
  return el(
    'ProductSection',
    [
      ['ovf:class', p.class],
      ['ovf:instance', p.instance],
    ],
    children,
  );
}

/** RASD properties in the schema's sequence order. */
const RASD_ORDER = [
  'Address',
  'AddressOnParent',
  'AllocationUnits',
  'AutomaticAllocation',
  'Caption',
  'Connection',
  'Description',
  'ElementName',
  'HostResource',
  'InstanceID',
  'Parent',
  'ResourceSubType',
  'ResourceType',
  'VirtualQuantity',
] as const;
type RasdKey = (typeof RASD_ORDER)[number];

function item(fields: Partial<Record<RasdKey, string | number | undefined>>, required = true): OutElement {
  return el(
    'Item',
    required ? undefined : [['ovf:required', 'false']],
    RASD_ORDER.filter((k) => fields[k] !== undefined).map((k) => ({ name: `rasd:${k}`, text: String(fields[k]) })),
  );
}

const CONTROLLER_RT = { ide: 5, scsi: 6, sata: 20, nvme: 20, usb: 23 } as const;
const DEFAULT_SUBTYPE: Record<string, string | undefined> = {
  scsi: 'lsilogic',
  sata: 'AHCI',
  nvme: 'vmware.nvme.controller',
};

function virtualSystem(vs: OvfVirtualSystem): OutElement {
  let next = 1;
  const ids = new Map<string, number>();
  const idFor = (old: string): number => {
    if (!ids.has(old)) ids.set(old, next++);
    return ids.get(old)!;
  };
  const items: OutElement[] = [];
  items.push(
    item({
      AllocationUnits: 'hertz * 10^6',
      Description: 'Number of Virtual CPUs',
      ElementName: `${vs.vcpus ?? 1} virtual CPU(s)`,
      InstanceID: next++,
      ResourceType: 3,
      VirtualQuantity: vs.vcpus ?? 1,
    }),
  );
  const mem = vs.memoryBytes ?? 0;
  const mib = mem % 2 ** 20 === 0;
  if (vs.memoryBytes !== undefined)
    items.push(
      item({
        AllocationUnits: mib ? 'byte * 2^20' : 'byte',
        Description: 'Memory Size',
        ElementName: `${mib ? mem / 2 ** 20 : mem}${mib ? 'MB' : ' bytes'} of memory`,
        InstanceID: next++,
        ResourceType: 4,
        VirtualQuantity: mib ? mem / 2 ** 20 : mem,
      }),
    );
  for (const c of vs.controllers) {
    if (c.kind === 'usb') continue;
    items.push(
      item({
        Address: c.address,
        Description: `${c.kind.toUpperCase()} Controller`,
        ElementName: c.name ?? `${c.kind}Controller${c.address ?? ''}`,
        InstanceID: idFor(c.instanceId),
        ResourceSubType: c.subtype ?? DEFAULT_SUBTYPE[c.kind],
        ResourceType: CONTROLLER_RT[c.kind],
      }),
    );
  }
  const parentOf = (id: string | undefined): number | undefined => (id === undefined ? undefined : ids.get(id));
  for (const d of vs.disks) {
    items.push(
      item({
        AddressOnParent: d.addressOnParent,
        ElementName: d.name ?? `disk${d.instanceId}`,
        // A disk with no DiskSection entry is an empty disk sized by its own quantity.
        AllocationUnits: d.diskId || d.capacityBytes === undefined ? undefined : 'byte',
        HostResource: d.diskId ? `ovf:/disk/${d.diskId}` : undefined,
        InstanceID: idFor(d.instanceId),
        Parent: parentOf(d.controllerId),
        ResourceType: 17,
        VirtualQuantity: d.diskId ? undefined : d.capacityBytes,
      }),
    );
  }
  for (const d of vs.drives) {
    items.push(
      item(
        {
          AddressOnParent: d.addressOnParent,
          AutomaticAllocation: d.fileRef ? 'true' : 'false',
          ElementName: d.name ?? `${d.kind}${d.instanceId}`,
          HostResource: d.fileRef ? `ovf:/file/${d.fileRef}` : undefined,
          InstanceID: idFor(d.instanceId),
          Parent: parentOf(d.controllerId),
          ResourceType: d.kind === 'floppy' ? 14 : d.kind === 'dvd' ? 16 : 15,
        },
        !!d.fileRef,
      ),
    );
  }
  for (const n of vs.nics) {
    items.push(
      item({
        Address: n.mac,
        AddressOnParent: n.addressOnParent,
        AutomaticAllocation: n.connected ? 'true' : 'false',
        Connection: n.network,
        Description: `${n.adapterType ?? 'virtio'} ethernet adapter${n.network ? ` on "${n.network}"` : ''}`,
        ElementName: n.name ?? `ethernet${n.instanceId}`,
        InstanceID: idFor(n.instanceId),
        ResourceSubType: n.adapterType,
        ResourceType: 10,
      }),
    );
  }
  for (const usb of vs.controllers.filter((c) => c.kind === 'usb')) {
    items.push(
      item(
        {
          Address: usb.address,
          ElementName: usb.name ?? 'usb',
          InstanceID: idFor(usb.instanceId),
          ResourceSubType: usb.subtype,
          ResourceType: 23,
        },
        false,
      ),
    );
  }
  const rt = { serial: 21, parallel: 22, graphics: 24, sound: 35 } as const;
  for (const d of vs.devices) {
    if (d.kind === 'usb') continue;
    items.push(
      item(
        {
          ElementName: d.name ?? d.kind,
          InstanceID: idFor(d.instanceId),
          ResourceSubType: d.subtype,
          ResourceType: rt[d.kind],
        },
        false,
      ),
    );
  }
  const os = vs.os;
  const osId = os?.cimId ?? (os?.name ? cimOsId(os.name) : undefined) ?? 1;
  return el(
    'VirtualSystem',
    [['ovf:id', vs.id]],
    [
      txt('Info', vs.info ?? 'A virtual machine'),
      txt('Name', vs.name),
      ...common(vs),
      el(
        'OperatingSystemSection',
        [
          ['ovf:id', osId],
          ['ovf:version', os?.version],
          ['vmw:osType', os?.vendorType],
        ],
        [txt('Info', 'The kind of installed guest operating system'), txt('Description', os?.description ?? os?.name)],
      ),
      el('VirtualHardwareSection', vs.transport?.length ? [['ovf:transport', vs.transport.join(' ')]] : undefined, [
        txt('Info', 'Virtual hardware requirements'),
        el('System', undefined, [
          txt('vssd:ElementName', 'Virtual Hardware Family'),
          txt('vssd:InstanceID', 0),
          txt('vssd:VirtualSystemIdentifier', vs.name),
          txt('vssd:VirtualSystemType', vs.virtualSystemType ?? 'vmx-10'),
        ]),
        ...items,
      ]),
    ],
  );
}
