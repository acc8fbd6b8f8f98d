/**
 * `ovf validate`: everything that can be checked without importing: the descriptor against
 * the DMTF schema, the model's own consistency, the manifest digests, sizes, signature and the
 * presence of every referenced file. Problems are collected, one line each, never thrown.
 */
import { FdError } from '../core/errors.js';
import { readPackage } from './package.js';
import { validateSchema } from './schema.js';

export interface ValidationReport {
  file: string;
  kind: 'ova' | 'ovf';
  ovfVersion?: string;
  /** Schema used, or why none was. */
  schema: string;
  manifest?: string;
  signedBy?: string;
  checkedFiles: number;
  problems: string[];
  warnings: string[];
}

export async function validatePackage(path: string): Promise<ValidationReport> {
  let report;
  try {
    report = await readPackage(path, { collectProblems: true });
  } catch (err) {
    // A package that cannot even be opened is one problem, reported the same way.
    if (!(err instanceof FdError)) throw err;
    return {
      file: path,
      kind: path.toLowerCase().endsWith('.ova') ? 'ova' : 'ovf',
      schema: 'not checked',
      checkedFiles: 0,
      problems: [`${err.code}: ${err.message}`],
      warnings: [],
    };
  }
  const env = report.envelope;
  const problems: string[] = [];
  const schema = await validateSchema(report.descriptorText, env.version, report.descriptorName);
  problems.push(...schema.errors.map((e) => `FD_OVF_SCHEMA: ${e}`));
  problems.push(...env.problems.map((p) => `${p.code}: ${p.message}`));
  problems.push(...report.problems.map((p) => `${p.code}: ${p.message}`));
  return {
    file: path,
    kind: report.kind,
    ovfVersion: env.version,
    schema: schema.schema ?? `none for OVF ${env.version} (schema check skipped)`,
    ...(report.manifest ? { manifest: report.manifest.name } : {}),
    ...(report.certificate ? { signedBy: report.certificate.subject } : {}),
    checkedFiles: report.members.length,
    problems,
    warnings: [...env.warnings, ...report.warnings],
  };
}
