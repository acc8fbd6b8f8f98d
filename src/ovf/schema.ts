/**
 * XSD validation of descriptors with xmllint (libxml2) against the DMTF schemas. The schema
 * directory is found beside the checkout (../shared/schemas) or, for an installed flightdeck,
 * in the copy vendored under src/ovf/schemas. Runs with --nonet: nothing is fetched.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../core/process.js';
import type { OvfVersion } from './model.js';

const ENVELOPE_1 = join('ovf-1.1.1', 'dsp8023_1.1.1.xsd');

/** The repository root, from this module's place in src/ovf or dist/src/ovf. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Directories searched for schemas, in order. */
export function schemaDirs(): string[] {
  const root = repoRoot();
  return [
    ...(process.env.FLIGHTDECK_OVF_SCHEMAS ? [process.env.FLIGHTDECK_OVF_SCHEMAS] : []),
    join(root, '..', 'shared', 'schemas'),
    join(root, 'src', 'ovf', 'schemas'),
  ];
}

export function envelopeSchema(version: OvfVersion): string | undefined {
  if (version !== '1.x') return undefined;
  for (const d of schemaDirs()) if (existsSync(join(d, ENVELOPE_1))) return join(d, ENVELOPE_1);
  return undefined;
}

export interface SchemaResult {
  /** Undefined when no schema exists for this OVF version (0.9, 2.x): nothing was checked. */
  schema?: string;
  errors: string[];
}

/** Validates descriptor text; the errors are xmllint's lines, prefixed with `name`. */
export async function validateSchema(xml: string, version: OvfVersion, name: string): Promise<SchemaResult> {
  const schema = envelopeSchema(version);
  if (!schema) return { errors: [] };
  const dir = await mkdtemp(join(tmpdir(), 'fd-ovf-xsd-'));
  try {
    const file = join(dir, 'descriptor.ovf');
    await writeFile(file, xml);
    const res = await run('xmllint', ['--noout', '--nonet', '--schema', schema, file], { allowFail: true });
    const errors = res.stderr
      .split('\n')
      .filter((l) => l.includes('validity error') || l.includes('parser error'))
      .map((l) => `${name}${l.slice(l.indexOf(file) + file.length)}`);
    if (res.code !== 0 && errors.length === 0)
      errors.push(`${name}: xmllint failed (exit ${res.code}): ${res.stderr.trim().split('\n').pop()}`);
    return { schema, errors };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
