/**
 * OVF descriptor -> normalized model. Reads OVF 0.9 (VMware namespace, xsi:type sections),
 * 1.x and 2.x, single systems and nested collections. Lenient where real exports are odd
 * (unqualified root, unprefixed attributes, mangled CIM namespaces) with a warning; anything
 * that would make an import wrong (a dangling reference, an unresolved capacity) is a problem.
 */
import { FdError } from '../core/errors.js';
import { cimOsName } from './cim-os.js';
import type {
  DiskFormat,
  OvfCollection,
  OvfConfiguration,
  OvfController,
  OvfDisk,
  OvfEntity,
  OvfEnvelope,
  OvfFile,
  OvfNetwork,
  OvfProblem,
  OvfProduct,
  OvfProperty,
  OvfStartupItem,
  OvfVersion,
  OvfVirtualSystem,
  VendorExtension,
} from './model.js';
import { OVF_NS_09, OVF_NS_1, OVF_NS_2, VMW_NS, VBOX_NS, isSettingDataNs } from './namespaces.js';
import { toBytes } from './units.js';
import { XSI_NS, XML_NS, attrNs, elements, parseXml, textOf, type XmlElement } from './xml.js';

export interface ParseOptions {
  /** Deployment option to resolve hardware for; defaults to the descriptor's default. */
  configuration?: string;
  /** Property values given by the user; they resolve ${key} capacities. */
  properties?: Record<string, string>;
  /** Name used in messages (a file name). */
  source?: string;
}

/** The parse context: the envelope's namespace and where messages go. */
class Ctx {
  readonly warnings: string[] = [];
  readonly problems: OvfProblem[] = [];
  constructor(
    readonly ns: string | undefined,
    readonly lenient: boolean,
    readonly source: string,
    /** Namespace of ovf:-prefixed attributes; differs from `ns` only for an unqualified root. */
    readonly attrNamespace: string | undefined = ns,
  ) {}

  isOvf(el: XmlElement): boolean {
    return el.ns === this.ns || (this.lenient && el.ns === undefined);
  }

  /** Section kind, with OVF 0.9's <Section xsi:type="ovf:DiskSection_Type"> normalized. */
  kind(el: XmlElement): string | undefined {
    if (!this.isOvf(el)) return undefined;
    if (el.local === 'Section' || el.local === 'Content') {
      const t = attrNs(el, XSI_NS, 'type');
      if (t) return t.slice(t.indexOf(':') + 1).replace(/_Type$/, '');
    }
    return el.local;
  }

  attr(el: XmlElement, local: string): string | undefined {
    return attrNs(el, this.attrNamespace, local) ?? attrNs(el, undefined, local);
  }

  child(el: XmlElement, kind: string): XmlElement | undefined {
    return elements(el).find((c) => this.kind(c) === kind);
  }

  childrenOf(el: XmlElement, kind: string): XmlElement[] {
    return elements(el).filter((c) => this.kind(c) === kind);
  }

  text(el: XmlElement, kind: string): string | undefined {
    const c = this.child(el, kind);
    return c ? textOf(c).trim() : undefined;
  }

  required(el: XmlElement): boolean {
    return this.attr(el, 'required') !== 'false';
  }

  problem(code: `FD_${string}`, message: string): void {
    this.problems.push({ code, message });
  }
}

const VERSIONS: Record<string, OvfVersion> = { [OVF_NS_09]: '0.9', [OVF_NS_1]: '1.x', [OVF_NS_2]: '2.x' };

/** Parses descriptor text. Throws FdError for input that is not an OVF envelope at all. */
export function parseOvf(xml: string, opts: ParseOptions = {}): OvfEnvelope {
  const source = opts.source ?? 'OVF descriptor';
  const root = parseXml(xml, source);
  if (root.local !== 'Envelope') {
    throw new FdError('FD_OVF_NOT_OVF', `${source}: root element is <${root.name}>, not an OVF <Envelope>`, {
      hint: 'pass an .ovf descriptor or an .ova archive',
    });
  }
  let version = root.ns === undefined ? undefined : VERSIONS[root.ns];
  const lenient = root.ns === undefined;
  if (!version && !lenient) {
    throw new FdError('FD_OVF_NOT_OVF', `${source}: <Envelope> is in namespace ${root.ns}, which is no OVF version`, {
      hint: `OVF envelopes use ${OVF_NS_1} (1.x), ${OVF_NS_2} (2.x) or ${OVF_NS_09} (0.9)`,
    });
  }
  const declared = root.scope.get('ovf');
  const ctx = new Ctx(root.ns, lenient, source, lenient && declared && VERSIONS[declared] ? declared : root.ns);
  if (lenient) {
    version = (declared && VERSIONS[declared]) || '1.x';
    ctx.warnings.push(`root <Envelope> has no namespace; read as OVF ${version} (unqualified elements)`);
  }

  const files = parseReferences(ctx, root);
  const networks: OvfNetwork[] = [];
  const disks: OvfDisk[] = [];
  const configurations: OvfConfiguration[] = [];
  const extensions: VendorExtension[] = [];
  let entityEl: XmlElement | undefined;
  for (const el of elements(root)) {
    const kind = ctx.kind(el);
    if (kind === 'References') continue;
    if (kind === 'DiskSection') disks.push(...parseDiskSection(ctx, el));
    else if (kind === 'NetworkSection') networks.push(...parseNetworkSection(ctx, el));
    else if (kind === 'DeploymentOptionSection') configurations.push(...parseDeploymentOptions(ctx, el));
    else if (kind === 'VirtualSystem' || kind === 'VirtualSystemCollection') {
      if (entityEl) ctx.problem('FD_OVF_BAD_STRUCTURE', `${source}: more than one top-level virtual system`);
      else entityEl = el;
    } else if (kind === undefined) extensions.push(extension(ctx, el));
    else if (kind !== 'Info' && kind !== 'Strings') unknownSection(ctx, el, kind, 'Envelope');
  }
  if (!entityEl) {
    throw new FdError('FD_OVF_NO_VIRTUAL_SYSTEM', `${source}: the envelope has no VirtualSystem or collection`, {
      hint: 'the descriptor describes nothing to import',
    });
  }

  let configuration = opts.configuration;
  if (configuration !== undefined) {
    if (!configurations.some((c) => c.id === configuration)) {
      throw new FdError(
        'FD_OVF_BAD_CONFIGURATION',
        `deployment option "${configuration}" is not in ${source} (${configurations.map((c) => c.id).join(', ') || 'none defined'})`,
        { hint: 'pick one of the listed deployment options' },
      );
    }
  } else if (configurations.length > 0) {
    configuration = (configurations.find((c) => c.default) ?? configurations[0]!).id;
  }

  const state: EntityState = { ctx, configuration, seenIds: new Set() };
  const entity = parseEntity(state, entityEl);

  // Capacities written as ${key} take the property's value (user-given first).
  const props = new Map<string, string>();
  collectPropertyDefaults(entity, props);
  for (const [k, v] of Object.entries(opts.properties ?? {})) props.set(k, v);
  for (const d of disks) resolveCapacity(ctx, d, props);

  checkReferences(ctx, files, disks, networks, entity);
  return {
    version: version!,
    namespace: root.ns ?? '',
    ...(attrNs(root, XML_NS, 'lang') ? { lang: attrNs(root, XML_NS, 'lang') } : {}),
    files,
    disks,
    networks,
    configurations,
    ...(configuration !== undefined ? { configuration } : {}),
    entity,
    extensions,
    warnings: ctx.warnings,
    problems: ctx.problems,
  };
}

function unknownSection(ctx: Ctx, el: XmlElement, kind: string, where: string): void {
  if (ctx.required(el) && !['Info', 'Name', 'Description'].includes(kind)) {
    ctx.warnings.push(`${where}: section ${kind} is not understood and was skipped`);
  }
}

function parseReferences(ctx: Ctx, root: XmlElement): OvfFile[] {
  const refs = ctx.child(root, 'References');
  if (!refs) return [];
  const out: OvfFile[] = [];
  for (const f of ctx.childrenOf(refs, 'File')) {
    const id = ctx.attr(f, 'id');
    const href = ctx.attr(f, 'href');
    if (!id || !href) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `References: a File lacks ${id ? 'href' : 'id'}`);
      continue;
    }
    if (attrNs(f, undefined, 'href') !== undefined && attrNs(f, ctx.ns, 'href') === undefined && !ctx.lenient) {
      ctx.warnings.push(`File ${id}: href attribute is unqualified (expected ovf:href)`);
    }
    const file: OvfFile = { id, href };
    const size = ctx.attr(f, 'size');
    if (size !== undefined) file.sizeBytes = toBytes(size, undefined, `File ${id} size`);
    const comp = ctx.attr(f, 'compression');
    if (comp !== undefined && comp !== '' && comp !== 'identity') {
      file.compression = comp;
      if (comp !== 'gzip')
        ctx.problem('FD_OVF_UNSUPPORTED_COMPRESSION', `File ${href}: compression "${comp}" is not gzip`);
    }
    const chunk = ctx.attr(f, 'chunkSize');
    if (chunk !== undefined) file.chunkSizeBytes = toBytes(chunk, undefined, `File ${id} chunkSize`);
    out.push(file);
  }
  return out;
}

function formatKind(format: string | undefined): DiskFormat {
  if (!format) return 'unknown';
  const f = format.toLowerCase();
  if (f.includes('vmdk')) {
    if (f.endsWith('#streamoptimized')) return 'vmdk-streamOptimized';
    if (f.endsWith('#sparse') || f.endsWith('#monolithicsparse')) return 'vmdk-sparse';
    return 'unknown';
  }
  if (f.includes('vhd')) return 'vhd';
  if (f.includes('qcow')) return 'qcow2';
  if (f.includes('raw')) return 'raw';
  return 'unknown';
}

/** Disks with their capacity still unresolved when it is a ${property} reference. */
interface PendingDisk extends OvfDisk {
  capacityText?: string;
  capacityUnits?: string;
}

function parseDiskSection(ctx: Ctx, sec: XmlElement): OvfDisk[] {
  const out: OvfDisk[] = [];
  for (const d of ctx.childrenOf(sec, 'Disk')) {
    const diskId = ctx.attr(d, 'diskId');
    if (!diskId) {
      ctx.problem('FD_OVF_BAD_REFERENCE', 'DiskSection: a Disk lacks ovf:diskId');
      continue;
    }
    const format = ctx.attr(d, 'format');
    const disk: PendingDisk = { diskId, formatKind: formatKind(format) };
    const fileRef = ctx.attr(d, 'fileRef');
    if (fileRef) disk.fileRef = fileRef;
    if (format) disk.format = format;
    const parentRef = ctx.attr(d, 'parentRef');
    if (parentRef) disk.parentRef = parentRef;
    const capacity = ctx.attr(d, 'capacity');
    const units = ctx.attr(d, 'capacityAllocationUnits');
    if (capacity === undefined) ctx.problem('FD_OVF_BAD_CAPACITY', `Disk ${diskId}: no ovf:capacity`);
    else {
      disk.capacityText = capacity;
      if (units !== undefined) disk.capacityUnits = units;
    }
    const populated = ctx.attr(d, 'populatedSize');
    if (populated !== undefined && /^\d+$/.test(populated)) disk.populatedSizeBytes = Number(populated);
    if (fileRef && disk.formatKind === 'unknown') {
      ctx.warnings.push(`Disk ${diskId}: format "${format ?? '(none)'}" is not recognized; the file will be probed`);
    }
    out.push(disk);
  }
  return out;
}

function resolveCapacity(ctx: Ctx, disk: PendingDisk, props: Map<string, string>): void {
  const text = disk.capacityText;
  const units = disk.capacityUnits;
  delete disk.capacityText;
  delete disk.capacityUnits;
  if (text === undefined) return;
  let value = text.trim();
  const ref = /^\$\{([^}]+)\}$/.exec(value);
  if (ref) {
    const v = props.get(ref[1]!);
    if (v === undefined || v.trim() === '') {
      ctx.problem('FD_OVF_BAD_CAPACITY', `Disk ${disk.diskId}: capacity ${value} names no property with a value`);
      return;
    }
    value = v.trim();
  }
  try {
    disk.capacityBytes = toBytes(value, units, `Disk ${disk.diskId} capacity`);
  } catch (err) {
    if (!(err instanceof FdError)) throw err;
    ctx.problem('FD_OVF_BAD_CAPACITY', err.message);
  }
}

function parseNetworkSection(ctx: Ctx, sec: XmlElement): OvfNetwork[] {
  return ctx.childrenOf(sec, 'Network').flatMap((n) => {
    const name = ctx.attr(n, 'name');
    if (!name) {
      ctx.problem('FD_OVF_BAD_REFERENCE', 'NetworkSection: a Network lacks ovf:name');
      return [];
    }
    const description = ctx.text(n, 'Description');
    return [{ name, ...(description ? { description } : {}) }];
  });
}

function parseDeploymentOptions(ctx: Ctx, sec: XmlElement): OvfConfiguration[] {
  return ctx.childrenOf(sec, 'Configuration').flatMap((c) => {
    const id = ctx.attr(c, 'id');
    if (!id) return [];
    const label = ctx.text(c, 'Label');
    const description = ctx.text(c, 'Description');
    return [
      {
        id,
        default: ctx.attr(c, 'default') === 'true',
        ...(label ? { label } : {}),
        ...(description ? { description } : {}),
      },
    ];
  });
}

interface EntityState {
  ctx: Ctx;
  configuration: string | undefined;
  seenIds: Set<string>;
}

/** True when an element tagged ovf:configuration="a b" applies to the selected option. */
function appliesTo(state: EntityState, el: XmlElement): boolean {
  const cfg = state.ctx.attr(el, 'configuration');
  if (cfg === undefined || cfg.trim() === '') return true;
  return state.configuration !== undefined && cfg.trim().split(/\s+/).includes(state.configuration);
}

function parseEntity(state: EntityState, el: XmlElement): OvfEntity {
  const { ctx } = state;
  const kind = ctx.kind(el)!;
  const id = ctx.attr(el, 'id') ?? '';
  if (!id) ctx.problem('FD_OVF_BAD_STRUCTURE', `a ${kind} lacks ovf:id`);
  else if (state.seenIds.has(`${kind}:${id}`)) {
    ctx.problem('FD_OVF_BAD_STRUCTURE', `ovf:id "${id}" is used by two ${kind} elements`);
  } else if (state.seenIds.has(id)) {
    // ovftool names a one-VM vApp after its VM; StartupSection ids stay resolvable by kind.
    ctx.warnings.push(`ovf:id "${id}" names both a collection and a virtual system`);
  }
  state.seenIds.add(id);
  state.seenIds.add(`${kind}:${id}`);
  const info = ctx.text(el, 'Info');
  const base = {
    id,
    ...(info ? { info } : {}),
    products: [] as OvfProduct[],
    eulas: [] as string[],
    extensions: [] as VendorExtension[],
  };
  if (kind === 'VirtualSystemCollection') {
    const coll: OvfCollection = {
      kind: 'VirtualSystemCollection',
      ...base,
      name: ctx.text(el, 'Name') || id,
      startup: [],
      members: [],
    };
    for (const c of elements(el)) {
      const k = ctx.kind(c);
      if (k === 'VirtualSystem' || k === 'VirtualSystemCollection') coll.members.push(parseEntity(state, c));
      else if (k === 'StartupSection') coll.startup = parseStartup(ctx, c);
      else if (!commonSection(state, coll, c, k)) unknownSection(ctx, c, k!, `collection ${id}`);
    }
    return coll;
  }
  const vs: OvfVirtualSystem = {
    kind: 'VirtualSystem',
    ...base,
    name: ctx.text(el, 'Name') || id,
    controllers: [],
    disks: [],
    nics: [],
    drives: [],
    devices: [],
  };
  let hardwareSeen = false;
  for (const c of elements(el)) {
    const k = ctx.kind(c);
    if (k === 'VirtualHardwareSection') {
      // Several sections may exist, one per virtual system type; the first is ours.
      if (hardwareSeen) ctx.warnings.push(`${vs.name}: extra VirtualHardwareSection ignored`);
      else parseHardware(state, vs, c);
      hardwareSeen = true;
    } else if (k === 'OperatingSystemSection') {
      const cim = ctx.attr(c, 'id');
      const cimId = cim !== undefined && /^\d+$/.test(cim) ? Number(cim) : undefined;
      const description = ctx.text(c, 'Description');
      const osVersion = ctx.attr(c, 'version');
      const vendorType =
        attrNs(c, VMW_NS, 'osType') ??
        elements(c)
          .filter((e) => e.ns === VBOX_NS && e.local === 'OSType')
          .map((e) => textOf(e).trim())[0];
      const name = cimId === undefined ? undefined : cimOsName(cimId);
      if (cimId !== undefined && name === undefined) ctx.warnings.push(`${vs.name}: unknown CIM OS id ${cimId}`);
      vs.os = {
        ...(cimId !== undefined ? { cimId } : {}),
        ...(name ? { name } : {}),
        ...(description ? { description } : {}),
        ...(osVersion ? { version: osVersion } : {}),
        ...(vendorType ? { vendorType } : {}),
      };
      for (const e of elements(c)) if (!ctx.isOvf(e)) vs.extensions.push(extension(ctx, e));
    } else if (!commonSection(state, vs, c, k)) unknownSection(ctx, c, k!, vs.name);
  }
  if (!hardwareSeen) ctx.problem('FD_OVF_BAD_STRUCTURE', `${vs.name}: no VirtualHardwareSection`);
  return vs;
}

/** Sections a system and a collection share. False when `c` is none of them. */
function commonSection(
  state: EntityState,
  target: { products: OvfProduct[]; eulas: string[]; annotation?: string; extensions: VendorExtension[] },
  c: XmlElement,
  k: string | undefined,
): boolean {
  const { ctx } = state;
  if (k === undefined) target.extensions.push(extension(ctx, c));
  else if (k === 'Info' || k === 'Name') return true;
  else if (k === 'ProductSection') target.products.push(parseProduct(state, c));
  else if (k === 'EulaSection') target.eulas.push(ctx.text(c, 'License') ?? '');
  else if (k === 'AnnotationSection') {
    const a = ctx.text(c, 'Annotation');
    if (a !== undefined) target.annotation = a;
  } else return false;
  return true;
}

function parseStartup(ctx: Ctx, sec: XmlElement): OvfStartupItem[] {
  const num = (el: XmlElement, name: string): number => {
    const v = ctx.attr(el, name);
    return v !== undefined && /^-?\d+$/.test(v) ? Number(v) : 0;
  };
  return ctx
    .childrenOf(sec, 'Item')
    .map((it) => {
      const startAction = ctx.attr(it, 'startAction');
      const stopAction = ctx.attr(it, 'stopAction');
      return {
        id: ctx.attr(it, 'id') ?? '',
        order: num(it, 'order'),
        startDelayS: num(it, 'startDelay'),
        stopDelayS: num(it, 'stopDelay'),
        ...(startAction ? { startAction } : {}),
        ...(stopAction ? { stopAction } : {}),
        waitingForGuest: ctx.attr(it, 'waitingForGuest') === 'true',
      };
    })
    .sort((a, b) => a.order - b.order);
}

function parseProduct(state: EntityState, sec: XmlElement): OvfProduct {
  const { ctx } = state;
  const cls = ctx.attr(sec, 'class');
  const instance = ctx.attr(sec, 'instance');
  const p: OvfProduct = { ...(cls ? { class: cls } : {}), ...(instance ? { instance } : {}), properties: [] };
  const fields = ['Product', 'Vendor', 'Version', 'FullVersion', 'ProductUrl', 'VendorUrl', 'AppUrl'] as const;
  const keys = ['product', 'vendor', 'version', 'fullVersion', 'productUrl', 'vendorUrl', 'appUrl'] as const;
  fields.forEach((f, i) => {
    const v = ctx.text(sec, f);
    if (v) p[keys[i]!] = v;
  });
  let category: string | undefined;
  for (const c of elements(sec)) {
    const k = ctx.kind(c);
    if (k === 'Category') category = textOf(c).trim() || undefined;
    else if (k === 'Property') {
      const key = ctx.attr(c, 'key');
      if (!key) {
        ctx.problem('FD_OVF_BAD_PROPERTY', 'ProductSection: a Property lacks ovf:key');
        continue;
      }
      let value = ctx.attr(c, 'value');
      for (const v of ctx.childrenOf(c, 'Value'))
        if (appliesTo(state, v) && ctx.attr(v, 'configuration')) value = ctx.attr(v, 'value');
      const qualifiers = ctx.attr(c, 'qualifiers');
      const label = ctx.text(c, 'Label');
      const description = ctx.text(c, 'Description');
      const prop: OvfProperty = {
        key,
        fullKey: [cls, key, instance].filter((x) => x).join('.'),
        type: ctx.attr(c, 'type') ?? 'string',
        userConfigurable: ctx.attr(c, 'userConfigurable') === 'true',
        password: ctx.attr(c, 'password') === 'true',
        ...(value !== undefined ? { defaultValue: value } : {}),
        ...(qualifiers ? { qualifiers } : {}),
        ...(label ? { label } : {}),
        ...(description ? { description } : {}),
        ...(category ? { category } : {}),
      };
      p.properties.push(prop);
    }
  }
  return p;
}

function collectPropertyDefaults(e: OvfEntity, out: Map<string, string>): void {
  for (const p of e.products)
    for (const prop of p.properties) {
      if (prop.defaultValue === undefined) continue;
      out.set(prop.key, prop.defaultValue);
      out.set(prop.fullKey, prop.defaultValue);
    }
  if (e.kind === 'VirtualSystemCollection') for (const m of e.members) collectPropertyDefaults(m, out);
}

/** RASD fields of one Item by lower-cased local name (0.9 writes InstanceId, 1.x InstanceID). */
type Rasd = Map<string, string[]>;

function rasdOf(item: XmlElement): Rasd {
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

const one = (r: Rasd, k: string): string | undefined => {
  const v = r.get(k.toLowerCase())?.[0];
  return v === undefined || v === '' ? undefined : v;
};

const CONTROLLER_TYPES: Record<number, OvfController['kind']> = { 5: 'ide', 6: 'scsi', 20: 'sata', 23: 'usb' };

function parseHardware(state: EntityState, vs: OvfVirtualSystem, sec: XmlElement): void {
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

function unmapped(ctx: Ctx, label: string, required: boolean, what: string): void {
  if (required) ctx.problem('FD_OVF_UNSUPPORTED_DEVICE', `${label}: required ${what} cannot be mapped`);
  else ctx.warnings.push(`${label}: optional ${what} is not supported and was skipped`);
}

/** vmw:Config and friends inside an Item: kept as opaque extensions of the system. */
function vendorItemConfig(ctx: Ctx, vs: OvfVirtualSystem, el: XmlElement): void {
  vs.extensions.push(extension(ctx, el));
}

function extension(ctx: Ctx, el: XmlElement): VendorExtension {
  return {
    namespace: el.ns ?? '',
    name: el.local,
    required: ctx.required(el),
    xml: serializeElement(el),
  };
}

/** Re-serializes an element with the namespace declarations it needs to stand alone. */
export function serializeElement(el: XmlElement): string {
  const used = new Map<string, string>();
  const collect = (e: XmlElement): void => {
    if (e.ns !== undefined) used.set(e.prefix ?? '', e.ns);
    for (const a of e.attrs) {
      const p = a.name.includes(':') ? a.name.slice(0, a.name.indexOf(':')) : undefined;
      if (p && p !== 'xml' && a.ns) used.set(p, a.ns);
    }
    for (const c of elements(e)) collect(c);
  };
  collect(el);
  const decls = [...used].map(([p, ns]) => ` ${p ? `xmlns:${p}` : 'xmlns'}="${esc(ns)}"`).join('');
  const out = (e: XmlElement, top: boolean): string => {
    const attrs = e.attrs.map((a) => ` ${a.name}="${esc(a.value)}"`).join('');
    const open = `<${e.name}${top ? decls : ''}${attrs}`;
    if (e.children.length === 0) return `${open}/>`;
    return `${open}>${e.children.map((c) => (typeof c === 'string' ? esc(c) : out(c, false))).join('')}</${e.name}>`;
  };
  return out(el, true);
}

const esc = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function checkReferences(
  ctx: Ctx,
  files: OvfFile[],
  disks: OvfDisk[],
  networks: OvfNetwork[],
  entity: OvfEntity,
): void {
  const fileIds = new Set<string>();
  const hrefs = new Set<string>();
  for (const f of files) {
    if (fileIds.has(f.id)) ctx.problem('FD_OVF_BAD_REFERENCE', `References: file id "${f.id}" is used twice`);
    fileIds.add(f.id);
    if (hrefs.has(f.href)) ctx.problem('FD_OVF_BAD_REFERENCE', `References: href "${f.href}" is listed twice`);
    hrefs.add(f.href);
    if (/^[a-z][a-z0-9+.-]*:/i.test(f.href)) {
      ctx.problem(
        'FD_OVF_EXTERNAL_FILE',
        `File ${f.id}: href "${f.href}" is a URL; only files in the package are read`,
      );
    } else if (f.href.startsWith('/') || f.href.split(/[\\/]/).includes('..')) {
      ctx.problem('FD_OVF_UNSAFE_HREF', `File ${f.id}: href "${f.href}" points outside the package`);
    }
  }
  const diskIds = new Set(disks.map((d) => d.diskId));
  for (const d of disks) {
    if (d.fileRef && !fileIds.has(d.fileRef)) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `Disk ${d.diskId}: ovf:fileRef "${d.fileRef}" names no File in References`);
    }
    if (d.parentRef && !diskIds.has(d.parentRef)) {
      ctx.problem('FD_OVF_BAD_REFERENCE', `Disk ${d.diskId}: ovf:parentRef "${d.parentRef}" names no Disk`);
    }
  }
  const netNames = new Set(networks.map((n) => n.name));
  const netLower = new Set(networks.map((n) => n.name.toLowerCase()));
  for (const vs of virtualSystemsOf(entity)) {
    for (const d of vs.disks) {
      if (d.diskId && !diskIds.has(d.diskId)) {
        ctx.problem(
          'FD_OVF_BAD_REFERENCE',
          `${vs.name}: disk item ${d.instanceId} refers to ovf:/disk/${d.diskId}, which is not in DiskSection`,
        );
      }
    }
    for (const d of vs.drives) {
      if (d.fileRef && !fileIds.has(d.fileRef)) {
        ctx.problem(
          'FD_OVF_BAD_REFERENCE',
          `${vs.name}: drive ${d.instanceId} refers to ovf:/file/${d.fileRef}, which is not in References`,
        );
      }
    }
    for (const n of vs.nics) {
      if (n.network && !netNames.has(n.network)) {
        ctx.warnings.push(
          netLower.has(n.network.toLowerCase())
            ? `${vs.name}: NIC ${n.instanceId} network "${n.network}" matches a NetworkSection name only ignoring case`
            : `${vs.name}: NIC ${n.instanceId} network "${n.network}" is not in NetworkSection`,
        );
      }
    }
  }
}

function virtualSystemsOf(e: OvfEntity): OvfVirtualSystem[] {
  return e.kind === 'VirtualSystem' ? [e] : e.members.flatMap(virtualSystemsOf);
}
