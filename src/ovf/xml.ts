/**
 * Safe, namespace-aware XML reading for OVF descriptors. fast-xml-parser gives the raw tree;
 * this module refuses DTDs (XXE, entity bombs) before any parsing happens, decodes the
 * predefined and numeric entities itself, and resolves every prefix to its namespace URI so
 * callers match elements by URI and never by the literal prefix a tool happened to write.
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { FdError } from '../core/errors.js';

export const XML_NS = 'http://www.w3.org/XML/1998/namespace';
export const XSI_NS = 'http://www.w3.org/2001/XMLSchema-instance';

export interface XmlAttr {
  /** As written, with prefix: `ovf:id`. */
  name: string;
  local: string;
  /** Namespace URI; undefined for unprefixed attributes (they are in no namespace). */
  ns: string | undefined;
  value: string;
}

export interface XmlElement {
  name: string;
  prefix: string | undefined;
  local: string;
  ns: string | undefined;
  attrs: XmlAttr[];
  children: XmlNode[];
  /** Namespace declarations in scope here (prefix '' is the default namespace). */
  scope: ReadonlyMap<string, string>;
}

export type XmlNode = XmlElement | string;

/** Declarations that make a parser fetch files or expand entities: never accepted. */
const DTD_PATTERN = /<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)\b/i;

export function parseXml(text: string, what: string): XmlElement {
  const dtd = DTD_PATTERN.exec(text);
  if (dtd) {
    throw new FdError('FD_OVF_DTD_REFUSED', `${what} contains a <!${dtd[1]!.toUpperCase()}> declaration`, {
      hint: 'OVF descriptors never need a DTD; remove it (DTDs allow external entities and entity-expansion bombs)',
    });
  }
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const valid = XMLValidator.validate(body, { allowBooleanAttributes: false });
  if (valid !== true) {
    const e = valid.err;
    throw new FdError('FD_OVF_BAD_XML', `${what} is not well-formed XML: ${e.msg} (line ${e.line}, column ${e.col})`, {
      hint: 'the descriptor is damaged or not an OVF file',
    });
  }
  const parser = new XMLParser({
    preserveOrder: true,
    ignoreAttributes: false,
    attributeNamePrefix: '',
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: false,
    processEntities: false,
    htmlEntities: false,
    ignoreDeclaration: true,
    ignorePiTags: true,
    commentPropName: false,
  });
  const raw = parser.parse(body) as RawNode[];
  const roots = raw.map((n) => build(n, new Map(), what)).filter((n): n is XmlElement => typeof n !== 'string');
  if (roots.length !== 1) {
    throw new FdError('FD_OVF_BAD_XML', `${what} has ${roots.length} root elements, expected one`);
  }
  return roots[0]!;
}

type RawNode = Record<string, unknown>;

function build(node: RawNode, parentScope: ReadonlyMap<string, string>, what: string): XmlNode {
  if ('#text' in node) return decodeEntities(String(node['#text']), what);
  const attrsRaw = (node[':@'] ?? {}) as Record<string, string>;
  const tag = Object.keys(node).find((k) => k !== ':@')!;
  let scope = parentScope;
  for (const [k, v] of Object.entries(attrsRaw)) {
    if (k === 'xmlns' || k.startsWith('xmlns:')) {
      if (scope === parentScope) scope = new Map(parentScope);
      (scope as Map<string, string>).set(k === 'xmlns' ? '' : k.slice(6), decodeEntities(v, what));
    }
  }
  const [prefix, local] = splitName(tag);
  const ns = prefix === undefined ? scope.get('') : resolvePrefix(scope, prefix, tag, what);
  const attrs: XmlAttr[] = [];
  for (const [k, v] of Object.entries(attrsRaw)) {
    if (k === 'xmlns' || k.startsWith('xmlns:')) continue;
    const [p, l] = splitName(k);
    attrs.push({
      name: k,
      local: l,
      ns: p === undefined ? undefined : resolvePrefix(scope, p, k, what),
      value: decodeEntities(v, what),
    });
  }
  const kids = (node[tag] ?? []) as RawNode[];
  const children = kids.map((k) => build(k, scope, what));
  return { name: tag, prefix, local, ns: ns || undefined, attrs, children, scope };
}

function splitName(name: string): [string | undefined, string] {
  const i = name.indexOf(':');
  return i < 0 ? [undefined, name] : [name.slice(0, i), name.slice(i + 1)];
}

function resolvePrefix(scope: ReadonlyMap<string, string>, prefix: string, name: string, what: string): string {
  if (prefix === 'xml') return XML_NS;
  const ns = scope.get(prefix);
  if (ns === undefined) {
    throw new FdError('FD_OVF_BAD_XML', `${what}: prefix "${prefix}" of <${name}> is not declared`, {
      hint: 'add the xmlns:' + prefix + ' declaration the producing tool forgot',
    });
  }
  return ns;
}

const PREDEFINED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Only the five predefined entities and character references exist without a DTD. */
export function decodeEntities(text: string, what: string): string {
  if (!text.includes('&')) return text;
  return text.replace(/&([^;&\s]*);?/g, (whole, name: string) => {
    if (!whole.endsWith(';')) throw badEntity(whole, what);
    if (name in PREDEFINED) return PREDEFINED[name]!;
    const m = /^#(x[0-9a-fA-F]+|[0-9]+)$/.exec(name);
    if (!m) throw badEntity(whole, what);
    const code = m[1]![0] === 'x' ? parseInt(m[1]!.slice(1), 16) : parseInt(m[1]!, 10);
    if (code > 0x10ffff || code === 0) throw badEntity(whole, what);
    return String.fromCodePoint(code);
  });
}

function badEntity(ref: string, what: string): FdError {
  return new FdError('FD_OVF_BAD_XML', `${what} uses the undefined entity ${ref}`, {
    hint: 'only &amp; &lt; &gt; &quot; &apos; and numeric references are allowed',
  });
}

export function isElement(n: XmlNode): n is XmlElement {
  return typeof n !== 'string';
}

export function elements(el: XmlElement): XmlElement[] {
  return el.children.filter(isElement);
}

/** Concatenated text of the element and its descendants. */
export function textOf(el: XmlElement): string {
  return el.children.map((c) => (typeof c === 'string' ? c : textOf(c))).join('');
}

export function attrNs(el: XmlElement, ns: string | undefined, local: string): string | undefined {
  return el.attrs.find((a) => a.local === local && a.ns === ns)?.value;
}

// --- writing ---------------------------------------------------------------------------------

export function escapeXml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => `&${{ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot' }[c]};`);
}

/** A tiny element builder for the writer: name with prefix, attributes in order, children. */
export interface OutElement {
  name: string;
  attrs?: [string, string | number | boolean | undefined][];
  children?: (OutElement | undefined | false)[];
  text?: string;
}

export function serializeXml(root: OutElement): string {
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>\n'];
  write(root, 0, out);
  return out.join('');
}

function write(el: OutElement, depth: number, out: string[]): void {
  const pad = '  '.repeat(depth);
  const attrs = (el.attrs ?? [])
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${escapeXml(String(v))}"`)
    .join('');
  const kids = (el.children ?? []).filter((c): c is OutElement => !!c);
  if (el.text !== undefined) {
    out.push(`${pad}<${el.name}${attrs}>${escapeXml(el.text)}</${el.name}>\n`);
  } else if (kids.length === 0) {
    out.push(`${pad}<${el.name}${attrs}/>\n`);
  } else {
    out.push(`${pad}<${el.name}${attrs}>\n`);
    for (const k of kids) write(k, depth + 1, out);
    out.push(`${pad}</${el.name}>\n`);
  }
}
