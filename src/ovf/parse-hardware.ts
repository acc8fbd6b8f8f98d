/** VirtualHardwareSection: RASD items (CPU, memory, controllers, disks, NICs, CD-ROMs) into a virtual system's hardware. */
import { FdError } from '../core/errors.js';
import type { OvfController, OvfVirtualSystem } from './model.js';
import { VMW_NS, isSettingDataNs } from './namespaces.js';
import { toBytes } from './units.js';
import { elements, textOf, type XmlElement } from './xml.js';
import { Ctx, EntityState, appliesTo, unknownSection, unmapped, extension } from './parse-context.js';

/** RASD fields of one Item by lower-cased local name (0.9 writes InstanceId, 1.x InstanceID). */
export type Rasd = Map<string, string[]>;

export function rasdOf(item: XmlElement): Rasd {
  const m: Rasd = new Map();
  for (const c of elements(item)) {
    if (!isSettingDataNs(c.ns)) continue;
    const k = c.local.toLowerCase();
    const list = m.get(k) ?? [];
    list.push(textOf(c).trim());
    m.set(k, list);
  }
  return m;
}

export const one = (r: Rasd, k: string): string | undefined => {
  const v = r.get(k.toLowerCase())?.[0];
  return v === undefined || v === '' ? undefined : v;
};

export const CONTROLLER_TYPES: Record<number, OvfController['kind']> = { 5: 'ide', 6: 'scsi', 20: 'sata', 23: 'usb' };

export function parseHardware(state: EntityState, vs: OvfVirtualSystem, sec: XmlElement): void {
  const { ctx } = state;
  const transport = ctx.attr(sec, 'transport');
  if (transport && transport.trim()) vs.transport = transport.trim().split(/\s+/);
  const system = ctx.child(sec, 'System');
  if (system) {
    const vst = elements(system).find((e) => e.local === 'VirtualSystemType');
    const vsi = elements(system).find((e) => e.local === 'VirtualSystemIdentifier');
    // Without a <Name>, the system identifier names the VM better than the bare ovf:id.
    if (vsi && textOf(vsi).trim() && vs.name === vs.id) vs.name = textOf(vsi).trim();
    if (vst && textOf(vst).trim()) vs.virtualSystemType = textOf(vst).trim();
  }

  // Items for the selected deployment option; a configuration-specific item replaces the
  // generic one with the same InstanceID (the way COT, ovftool and vCenter read them).
  const picked = new Map<string, { el: XmlElement; specific: boolean }>();
  const order: string[] = [];
  let anon = 0;
  for (const el of elements(sec)) {
    const k = ctx.kind(el);
    if (k === undefined) {
      vs.extensions.push(extension(ctx, el));
      continue;
    }
    if (k !== 'Item' && k !== 'StorageItem' && k !== 'EthernetPortItem') {
      if (k !== 'Info' && k !== 'System') unknownSection(ctx, el, k, `${vs.name} hardware`);
      continue;
    }
    const bound = ctx.attr(el, 'bound');
    if (bound === 'min' || bound === 'max') continue;
    if (!appliesTo(state, el)) continue;
    const id = one(rasdOf(el), 'InstanceID') ?? `#${++anon}`;
    const specific = !!ctx.attr(el, 'configuration');
    const prev = picked.get(id);
    if (!prev) order.push(id);
    else if (prev.specific && !specific) continue;
    picked.set(id, { el, specific });
  }

  for (const id of order) {
    const el = picked.get(id)!.el;
    const r = rasdOf(el);
    const rt = Number(one(r, 'ResourceType') ?? NaN);
    const name = one(r, 'ElementName') ?? one(r, 'Caption');
    const sub = one(r, 'ResourceSubType');
    const required = ctx.required(el);
    const label = `${vs.name}: item ${id}${name ? ` (${name})` : ''}`;
    for (const e of elements(el)) if (!ctx.isOvf(e) && !isSettingDataNs(e.ns)) vendorItemConfig(ctx, vs, e);
    const common = { instanceId: id, ...(name ? { name } : {}) };
    const parent = one(r, 'Parent');
    const aop = one(r, 'AddressOnParent');
    const place = { ...(parent ? { controllerId: parent } : {}), ...(aop ? { addressOnParent: aop } : {}) };
    switch (rt) {
      case 3: {
        const q = Number(one(r, 'VirtualQuantity') ?? '1');
        vs.vcpus = Number.isInteger(q) && q > 0 ? q : 1;
        const cps = elements(el).find((e) => e.ns === VMW_NS && e.local === 'CoresPerSocket');
        if (cps && /^\d+$/.test(textOf(cps).trim())) vs.coresPerSocket = Number(textOf(cps).trim());
        break;
      }
      case 4: {
        const q = one(r, 'VirtualQuantity');
        if (q === undefined) {
          ctx.problem('FD_OVF_BAD_MEMORY', `${label}: memory item has no VirtualQuantity`);
          break;
        }
        let units = one(r, 'AllocationUnits');
        if (units === undefined && Number(q) < 65536) {
          units = 'byte * 2^20';
          ctx.warnings.push(`${label}: memory has no AllocationUnits; ${q} read as MiB`);
        }
        try {
          vs.memoryBytes = toBytes(q, units, `${label} memory`);
        } catch (err) {
          if (!(err instanceof FdError)) throw err;
          ctx.problem('FD_OVF_BAD_MEMORY', err.message);
        }
        break;
      }
      case 5:
      case 6:
      case 20:
      case 23: {
        let kind = CONTROLLER_TYPES[rt]!;
        const s = (sub ?? '').toLowerCase();
        if (rt === 20) {
          if (s.includes('nvme')) kind = 'nvme';
          else if (!s.includes('sata') && !s.includes('ahci') && s !== '') {
            unmapped(ctx, label, required, `storage controller subtype "${sub}"`);
            break;
          }
        }
        const address = one(r, 'Address');
        vs.controllers.push({
          ...common,
          kind,
          ...(sub ? { subtype: sub } : {}),
          ...(address ? { address } : {}),
        });
        if (kind === 'usb') vs.devices.push({ ...common, kind: 'usb', ...(sub ? { subtype: sub } : {}) });
        break;
      }
      case 17:
      case 19:
      case 31:
      case 32: {
        const hosts = r.get('hostresource') ?? [];
        const host = hosts.find((h) => h !== '');
        const m = host ? /^(?:ovf:)?\/disk\/(.+)$/.exec(host) : null;
        if (m) vs.disks.push({ ...common, diskId: m[1]!, ...place });
        else if (host) {
          ctx.problem('FD_OVF_BAD_REFERENCE', `${label}: disk HostResource "${host}" is not ovf:/disk/<id>`);
        } else {
          const q = one(r, 'VirtualQuantity');
          if (q === undefined) {
            unmapped(ctx, label, required, 'disk without HostResource or VirtualQuantity');
            break;
          }
          try {
            vs.disks.push({
              ...common,
              capacityBytes: toBytes(q, one(r, 'AllocationUnits') ?? one(r, 'VirtualQuantityUnits'), label),
              ...place,
            });
            ctx.warnings.push(`${label}: disk has no DiskSection entry; an empty disk of its quantity is created`);
          } catch (err) {
            if (!(err instanceof FdError)) throw err;
            ctx.problem('FD_OVF_BAD_CAPACITY', err.message);
          }
        }
        break;
      }
      case 10: {
        const network = one(r, 'Connection');
        const mac = one(r, 'Address');
        const auto = one(r, 'AutomaticAllocation');
        vs.nics.push({
          ...common,
          ...(network ? { network } : {}),
          ...(sub ? { adapterType: sub } : {}),
          ...(mac ? { mac } : {}),
          ...(aop ? { addressOnParent: aop } : {}),
          connected: auto !== 'false',
        });
        break;
      }
      case 14:
      case 15:
      case 16: {
        const host = (r.get('hostresource') ?? []).find((h) => h !== '');
        const m = host ? /^(?:ovf:)?\/file\/(.+)$/.exec(host) : null;
        if (host && !m) ctx.warnings.push(`${label}: HostResource "${host}" is not a packaged file; drive left empty`);
        vs.drives.push({
          ...common,
          kind: rt === 14 ? 'floppy' : rt === 15 ? 'cdrom' : 'dvd',
          ...place,
          ...(m ? { fileRef: m[1]! } : {}),
        });
        break;
      }
      case 21:
      case 22:
      case 24:
      case 35: {
        const kind = ({ 21: 'serial', 22: 'parallel', 24: 'graphics', 35: 'sound' } as const)[rt];
        vs.devices.push({ ...common, kind, ...(sub ? { subtype: sub } : {}) });
        break;
      }
      case 1:
        // VMware files its HD Audio card as "other" with a telling subtype.
        if (sub && /sound/i.test(sub)) {
          vs.devices.push({ ...common, kind: 'sound', subtype: sub });
          break;
        }
        unmapped(ctx, label, required, `resource type 1${sub ? ` (${sub})` : ''}`);
        break;
      default:
        unmapped(
          ctx,
          label,
          required,
          Number.isNaN(rt) ? 'item without ResourceType' : `resource type ${rt}${sub ? ` (${sub})` : ''}`,
        );
    }
  }
  if (vs.vcpus === undefined) ctx.warnings.push(`${vs.name}: no CPU item; 1 vCPU assumed`);
  if (vs.memoryBytes === undefined && !ctx.problems.some((p) => p.code === 'FD_OVF_BAD_MEMORY')) {
    ctx.warnings.push(`${vs.name}: no memory item`);
  }
  for (const list of [vs.disks, vs.drives]) {
    for (const d of list) {
      if (d.controllerId && !vs.controllers.some((c) => c.instanceId === d.controllerId)) {
        ctx.problem(
          'FD_OVF_BAD_REFERENCE',
          `${vs.name}: item ${d.instanceId} has Parent ${d.controllerId}, which is no controller`,
        );
      }
    }
  }
}

/** vmw:Config and friends inside an Item: kept as opaque extensions of the system. */
export function vendorItemConfig(ctx: Ctx, vs: OvfVirtualSystem, el: XmlElement): void {
  vs.extensions.push(extension(ctx, el));
}
