/**
 * OVF descriptor -> normalized model. Reads OVF 0.9 (VMware namespace, xsi:type sections),
 * 1.x and 2.x, single systems and nested collections. Lenient where real exports are odd
 * (unqualified root, unprefixed attributes, mangled CIM namespaces) with a warning; anything
 * that would make an import wrong (a dangling reference, an unresolved capacity) is a problem.
 */
import { FdError } from '../core/errors.js';
import type { OvfConfiguration, OvfDisk, OvfEnvelope, OvfNetwork, OvfVersion, VendorExtension } from './model.js';
import { OVF_NS_09, OVF_NS_1, OVF_NS_2 } from './namespaces.js';
import { XML_NS, attrNs, elements, parseXml, type XmlElement } from './xml.js';
import { Ctx, EntityState, unknownSection, extension } from './parse-context.js';
import {
  parseReferences,
  parseDiskSection,
  resolveCapacity,
  parseNetworkSection,
  parseDeploymentOptions,
  checkReferences,
} from './parse-sections.js';
import { parseEntity, collectPropertyDefaults } from './parse-entity.js';

export interface ParseOptions {
  /** Deployment option to resolve hardware for; defaults to the descriptor's default. */
  configuration?: string;
  /** Property values given by the user; they resolve ${key} capacities. */
  properties?: Record<string, string>;
  /** Name used in messages (a file name). */
  source?: string;
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

export { serializeElement } from './parse-context.js';
