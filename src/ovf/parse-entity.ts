/** VirtualSystem and VirtualSystemCollection entities: their sections (product, properties, EULA, startup order, OS). */
import { cimOsName } from './cim-os.js';
import type {
  OvfCollection,
  OvfEntity,
  OvfProduct,
  OvfProperty,
  OvfStartupItem,
  OvfVirtualSystem,
  VendorExtension,
} from './model.js';
import { VMW_NS, VBOX_NS } from './namespaces.js';
import { attrNs, elements, textOf, type XmlElement } from './xml.js';
import { Ctx, EntityState, appliesTo, unknownSection, extension } from './parse-context.js';
import { parseHardware } from './parse-hardware.js';

export function parseEntity(state: EntityState, el: XmlElement): OvfEntity {
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
export function commonSection(
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

export function parseStartup(ctx: Ctx, sec: XmlElement): OvfStartupItem[] {
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

export function parseProduct(state: EntityState, sec: XmlElement): OvfProduct {
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

export function collectPropertyDefaults(e: OvfEntity, out: Map<string, string>): void {
  for (const p of e.products)
    for (const prop of p.properties) {
      if (prop.defaultValue === undefined) continue;
      out.set(prop.key, prop.defaultValue);
      out.set(prop.fullKey, prop.defaultValue);
    }
  if (e.kind === 'VirtualSystemCollection') for (const m of e.members) collectPropertyDefaults(m, out);
}
