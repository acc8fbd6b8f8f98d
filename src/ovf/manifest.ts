/**
 * OVF manifests (.mf): one "ALGO(file)= hex" line per file. Real tools vary the spacing
 * ("SHA256 (file) = hex" from openssl, "SHA1(file)= hex" from ovftool), so parsing accepts any;
 * writing uses ovftool's form, which every importer reads.
 */
import { FdError } from '../core/errors.js';

export type DigestAlgorithm = 'sha1' | 'sha256' | 'sha512';

export interface ManifestEntry {
  algorithm: DigestAlgorithm;
  file: string;
  digest: string;
}

const LINE = /^\s*(SHA1|SHA256|SHA512)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)\s*$/i;
const DIGEST_HEX: Record<DigestAlgorithm, number> = { sha1: 40, sha256: 64, sha512: 128 };

export function parseManifest(text: string, source = 'manifest'): ManifestEntry[] {
  const out: ManifestEntry[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const m = LINE.exec(line);
    if (!m) {
      throw new FdError(
        'FD_OVF_BAD_MANIFEST',
        `${source} line ${i + 1} is not "ALGO(file)= digest": ${line.slice(0, 80)}`,
        {
          hint: 'regenerate the manifest, or remove it to skip the integrity check',
        },
      );
    }
    const algorithm = m[1]!.toLowerCase() as DigestAlgorithm;
    const digest = m[3]!.toLowerCase();
    if (digest.length !== DIGEST_HEX[algorithm]) {
      throw new FdError(
        'FD_OVF_BAD_MANIFEST',
        `${source} line ${i + 1}: a ${algorithm.toUpperCase()} digest has ${DIGEST_HEX[algorithm]} hex digits, not ${digest.length}`,
      );
    }
    out.push({ algorithm, file: m[2]!.trim(), digest });
  });
  return out;
}

export function formatManifest(entries: ManifestEntry[]): string {
  return entries.map((e) => `${e.algorithm.toUpperCase()}(${e.file})= ${e.digest}\n`).join('');
}

export function mismatch(file: string, entry: ManifestEntry, actual: string): FdError {
  return new FdError(
    'FD_OVF_MANIFEST_MISMATCH',
    `${file}: ${entry.algorithm.toUpperCase()} is ${actual}, the manifest says ${entry.digest}`,
    { hint: 'the file was changed or damaged after the appliance was made; get a fresh copy' },
  );
}
