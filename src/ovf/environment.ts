/**
 * ProductSection properties -> the OVF environment document (DSP0243 section 11) a guest reads
 * from `ovf-env.xml` on a CD-ROM (ovf:transport="iso"). Values the user gave are checked
 * against each property's type and qualifiers; defaults fill the rest. Non-configurable
 * properties keep their defaults: an appliance relies on them.
 */
import { FdError } from '../core/errors.js';
import type { OvfEntity, OvfProperty } from './model.js';
import { OVFENV_NS_1 } from './namespaces.js';
import { serializeXml, type OutElement } from './xml.js';

export interface ResolvedProperty {
  key: string;
  value: string;
  fromUser: boolean;
}

/** Checks one value against an OVF property type and its qualifiers; returns why not, or undefined. */
export function propertyValueProblem(p: OvfProperty, value: string): string | undefined {
  const t = p.type.toLowerCase();
  if (/^(u?int(8|16|32|64)|int)$/.test(t)) {
    if (!/^[-+]?\d+$/.test(value.trim())) return `${p.key} is of type ${p.type}; "${value}" is not a whole number`;
    const n = Number(value.trim());
    if (t.startsWith('uint') && n < 0) return `${p.key} is of type ${p.type}; ${n} is negative`;
  } else if (t === 'boolean') {
    if (!/^(true|false)$/i.test(value)) return `${p.key} is a boolean; "${value}" is not true or false`;
  } else if (t === 'real32' || t === 'real64') {
    if (!Number.isFinite(Number(value))) return `${p.key} is of type ${p.type}; "${value}" is not a number`;
  }
  for (const q of (p.qualifiers ?? '').matchAll(
    /(MinLen|MaxLen|MinValue|MaxValue)\(\s*(-?\d+)\s*\)|ValueMap\{([^}]*)\}/g,
  )) {
    if (q[3] !== undefined) {
      const allowed = q[3].split(',').map((s) => s.trim().replace(/^"|"$/g, ''));
      if (!allowed.includes(value)) return `${p.key} must be one of ${allowed.join(', ')}; "${value}" is not`;
      continue;
    }
    const lim = Number(q[2]);
    if (q[1] === 'MinLen' && value.length < lim) return `${p.key} needs at least ${lim} characters`;
    if (q[1] === 'MaxLen' && value.length > lim)
      return `${p.key} takes at most ${lim} characters (got ${value.length})`;
    if (q[1] === 'MinValue' && Number(value) < lim) return `${p.key} must be at least ${lim}`;
    if (q[1] === 'MaxValue' && Number(value) > lim) return `${p.key} must be at most ${lim}`;
  }
  return undefined;
}

/**
 * The values a system's guest will see. `given` is keyed by plain key or fully qualified key
 * (class.key.instance). Throws FD_OVF_BAD_PROPERTY listing every bad or unknown value at once.
 */
export function resolveProperties(entity: OvfEntity, given: Record<string, string> = {}): ResolvedProperty[] {
  const props = entity.products.flatMap((p) => p.properties);
  const problems: string[] = [];
  const used = new Set<string>();
  const out: ResolvedProperty[] = [];
  for (const p of props) {
    const userKey = p.fullKey in given ? p.fullKey : p.key in given ? p.key : undefined;
    let value = p.defaultValue ?? '';
    let fromUser = false;
    if (userKey !== undefined) {
      used.add(userKey);
      if (!p.userConfigurable) {
        problems.push(`${p.fullKey} is not user-configurable`);
        continue;
      }
      value = given[userKey]!;
      fromUser = true;
    }
    if (fromUser || value !== '') {
      const why = propertyValueProblem(p, value);
      if (why) problems.push(why);
    }
    out.push({ key: p.fullKey, value, fromUser });
  }
  for (const k of Object.keys(given)) if (!used.has(k)) problems.push(`${k} is not a property of ${entity.id}`);
  if (problems.length) {
    throw new FdError(
      'FD_OVF_BAD_PROPERTY',
      `property values for ${entity.id} are not accepted: ${problems.join('; ')}`,
      {
        hint: 'see `flightdeck ovf inspect` for each property, its type and its limits',
        details: problems,
      },
    );
  }
  return out;
}

/** The ovf-env.xml document for one virtual system. */
export function ovfEnvironment(systemId: string, values: ResolvedProperty[], platform = 'flightdeck'): string {
  const root: OutElement = {
    name: 'Environment',
    attrs: [
      ['xmlns', OVFENV_NS_1],
      ['xmlns:oe', OVFENV_NS_1],
      ['xmlns:xsi', 'http://www.w3.org/2001/XMLSchema-instance'],
      ['oe:id', systemId],
    ],
    children: [
      { name: 'PlatformSection', children: [{ name: 'Kind', text: platform }] },
      {
        name: 'PropertySection',
        children: values.map((v) => ({
          name: 'Property',
          attrs: [
            ['oe:key', v.key],
            ['oe:value', v.value],
          ],
        })),
      },
    ],
  };
  return serializeXml(root);
}
