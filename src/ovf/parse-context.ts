/** The OVF parser's context (namespace, leniency, messages) and helpers every section reader shares. */
import type { OvfProblem, VendorExtension } from './model.js';
import { XSI_NS, attrNs, elements, textOf, type XmlElement } from './xml.js';

/** The parse context: the envelope's namespace and where messages go. */
export class Ctx {
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

export interface EntityState {
  ctx: Ctx;
  configuration: string | undefined;
  seenIds: Set<string>;
}

/** True when an element tagged ovf:configuration="a b" applies to the selected option. */
export function appliesTo(state: EntityState, el: XmlElement): boolean {
  const cfg = state.ctx.attr(el, 'configuration');
  if (cfg === undefined || cfg.trim() === '') return true;
  return state.configuration !== undefined && cfg.trim().split(/\s+/).includes(state.configuration);
}

export function unknownSection(ctx: Ctx, el: XmlElement, kind: string, where: string): void {
  if (ctx.required(el) && !['Info', 'Name', 'Description'].includes(kind)) {
    ctx.warnings.push(`${where}: section ${kind} is not understood and was skipped`);
  }
}

export function unmapped(ctx: Ctx, label: string, required: boolean, what: string): void {
  if (required) ctx.problem('FD_OVF_UNSUPPORTED_DEVICE', `${label}: required ${what} cannot be mapped`);
  else ctx.warnings.push(`${label}: optional ${what} is not supported and was skipped`);
}

export function extension(ctx: Ctx, el: XmlElement): VendorExtension {
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

export const esc = (s: string): string =>
  s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
