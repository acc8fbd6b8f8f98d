/**
 * `ovf validate`: everything that can be checked without importing: the descriptor against
 * the DMTF schema, the model's own consistency, the manifest digests, sizes, signature and the
 * presence of every referenced file; streamOptimized disks are decoded end to end (every grain
 * inflated, nothing written) and their size held against ovf:capacity. Problems are collected,
 * one line each, never thrown.
 */
import { FdError } from '../core/errors.js';
import { streamVmdkToSink } from '../disk/vmdk/stream-reader.js';
import { readPackage, type PackageFile } from './package.js';
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

export interface ValidateOptions {
  /** Decode streamOptimized disks (default true); off, only digests and sizes are checked. */
  checkDisks?: boolean;
}

export async function validatePackage(path: string, opts: ValidateOptions = {}): Promise<ValidationReport> {
  let report;
  const diskProblems: string[] = [];
  const checkDisk = async (f: PackageFile, disks: { diskId: string; capacityBytes?: number; fileRef?: string }[]) => {
    const head = f.body[Symbol.asyncIterator]();
    const first = await head.next();
    if (first.done) return;
    const b = first.value;
    // Only streamOptimized VMDKs are decoded here; other formats are checked by conversion.
    if (b.length < 12 || b.toString('latin1', 0, 4) !== 'KDMV' || (b.readUInt32LE(8) & 0x30000) !== 0x30000) return;
    const again = (async function* () {
      yield b;
      for (let r = await head.next(); !r.done; r = await head.next()) yield r.value;
    })();
    try {
      const res = await streamVmdkToSink(again, { write: async () => undefined }, { source: f.file.href });
      for (const d of disks.filter((x) => x.fileRef === f.file.id)) {
        if (d.capacityBytes !== undefined && d.capacityBytes < res.sizeBytes) {
          diskProblems.push(
            `FD_OVF_CAPACITY_TOO_SMALL: Disk ${d.diskId}: ovf:capacity ${d.capacityBytes} is smaller than the ${res.sizeBytes}-byte disk in ${f.file.href}`,
          );
        }
      }
    } catch (err) {
      if (!(err instanceof FdError)) throw err;
      diskProblems.push(`${err.code}: ${err.message}`);
    }
  };
  try {
    let disks: { diskId: string; capacityBytes?: number; fileRef?: string }[] = [];
    report = await readPackage(path, {
      collectProblems: true,
      ...(opts.checkDisks === false
        ? {}
        : {
            onFile: async (f) => {
              if (disks.length === 0) disks = (await readPackage(path, { descriptorOnly: true })).envelope.disks;
              if (disks.some((d) => d.fileRef === f.file.id)) await checkDisk(f, disks);
            },
          }),
    });
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
  problems.push(...diskProblems);
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
