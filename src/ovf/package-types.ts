/** The shapes of reading an appliance: options, the files handed out, the report. */
import type { CertCheck } from './cert.js';
import type { DigestAlgorithm, ManifestEntry } from './manifest.js';
import type { OvfEnvelope, OvfFile, OvfProblem } from './model.js';
import type { ParseOptions } from './parse.js';

export interface PackageFile {
  file: OvfFile;
  /** Bytes as stored in the package (compressed, all chunks). */
  storedSizeBytes?: number;
  /** The file's content: gunzipped when compression="gzip", chunks joined. Read it once. */
  body: AsyncIterable<Buffer>;
}

export interface ReadPackageOptions extends ParseOptions {
  /** Gets every referenced file, in package order. Unread data is drained (and still hashed). */
  onFile?(f: PackageFile): Promise<void>;
  /** Stop after the descriptor (inspect). */
  descriptorOnly?: boolean;
  /** Record manifest/size/missing-file problems instead of throwing at the first one. */
  collectProblems?: boolean;
  /** Hash big members on a worker thread (default true). */
  hashOffThread?: boolean;
  /** Files beside an .ovf must be regular files inside its directory (a daemon's import). */
  confined?: boolean;
}

export interface PackageMember {
  name: string;
  sizeBytes: number;
  /** Algorithm the manifest verified this member with. */
  verified?: DigestAlgorithm;
}

export interface PackageReport {
  kind: 'ova' | 'ovf';
  path: string;
  descriptorName: string;
  descriptorText: string;
  envelope: OvfEnvelope;
  manifest?: { name: string; entries: ManifestEntry[] };
  certificate?: CertCheck;
  members: PackageMember[];
  warnings: string[];
  problems: OvfProblem[];
}
