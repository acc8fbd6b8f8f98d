/** What reading an OVA and reading an .ovf directory share: limits, digests of streamed members, the report. */
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { FdError } from '../core/errors.js';
import { verifyManifestSignature } from './cert.js';
import { type Digester } from './digest.js';
import { mismatch, type DigestAlgorithm, type ManifestEntry } from './manifest.js';
import type { OvfFile, OvfProblem } from './model.js';
import type { ReadPackageOptions, PackageMember, PackageReport } from './package-types.js';

export const MAX_DESCRIPTOR_BYTES = 32 << 20;

export const MAX_SMALL_MEMBER_BYTES = 16 << 20;

export const ALL_ALGORITHMS: DigestAlgorithm[] = ['sha1', 'sha256', 'sha512'];

export const READ_CHUNK_BYTES = 4 << 20;

/** Members at least this big are hashed on a worker thread. */
export const OFF_THREAD_BYTES = 1 << 20;

/** Collects problems or throws them, as the caller asked. */
export class Problems {
  readonly list: OvfProblem[] = [];
  constructor(private readonly collect: boolean) {}
  add(err: FdError): void {
    if (!this.collect) throw err;
    this.list.push({ code: err.code, message: err.message });
  }
}

/** Hashes a member's bytes as they pass; with no manifest known yet, every algorithm. */
export function tapped(src: AsyncIterable<Buffer>, taps: Digester[], count: { n: number }): AsyncIterable<Buffer> {
  return (async function* () {
    for await (const c of src) {
      for (const t of taps) t.update(c);
      for (const t of taps) if (t.ready) await t.ready();
      count.n += c.length;
      yield c;
    }
  })();
}

export function gunzip(src: AsyncIterable<Buffer>, name: string): AsyncIterable<Buffer> {
  const gz = createGunzip();
  const input = Readable.from(src);
  input.on('error', (e) => gz.destroy(e));
  input.pipe(gz);
  return (async function* () {
    try {
      for await (const c of gz) yield c as Buffer;
    } catch (err) {
      if (err instanceof FdError) throw err;
      throw new FdError('FD_OVF_BAD_GZIP', `${name} is marked compression="gzip" but does not gunzip`, { cause: err });
    }
  })();
}

export async function drain(src: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of src);
}

/**
 * Hands a file to the handler behind a shield: a handler that stops early (break) must not
 * close the underlying stream, because the rest is drained afterwards so the digest covers
 * every byte and the archive stays in step.
 */
export async function deliver(opts: ReadPackageOptions, file: OvfFile, body: AsyncIterable<Buffer>): Promise<void> {
  const it = body[Symbol.asyncIterator]();
  const shielded: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: () => it.next() }) };
  if (opts.onFile) await opts.onFile({ file, body: shielded });
  for (let n = await it.next(); !n.done; n = await it.next());
}

export function chunkName(href: string, i: number): string {
  return `${href}.${String(i).padStart(9, '0')}`;
}

export async function checkDigest(
  problems: Problems,
  manifest: Map<string, ManifestEntry> | undefined,
  name: string,
  taps: Digester[],
  member: PackageMember,
): Promise<void> {
  if (!manifest) return;
  const entry = manifest.get(name);
  if (!entry) return;
  const tap = taps.find((t) => t.algorithm === entry.algorithm);
  if (!tap) return;
  const actual = await tap.hex();
  if (actual !== entry.digest) problems.add(mismatch(name, entry, actual));
  else member.verified = entry.algorithm;
}

/** Checks that need the whole package: missing files, manifest coverage, the signature. */
export function finish(
  report: PackageReport,
  problems: Problems,
  manifest: { name: string; entries: ManifestEntry[]; raw: Buffer } | undefined,
  cert: { name: string; text: string } | undefined,
  present: Set<string>,
  source: string,
): void {
  for (const f of report.envelope.files) {
    const there =
      f.chunkSizeBytes !== undefined ? present.has(chunkName(f.href, 0)) || present.has(f.href) : present.has(f.href);
    if (!there) {
      problems.add(
        new FdError('FD_OVF_MISSING_FILE', `${source}: ${f.href} (File ${f.id}) is referenced but not in the package`, {
          hint: 'the appliance is incomplete; get the missing file',
        }),
      );
    }
  }
  if (manifest) {
    report.manifest = { name: manifest.name, entries: manifest.entries };
    const listed = new Set(manifest.entries.map((e) => e.file));
    for (const m of report.members) {
      if (m.name !== manifest.name && !listed.has(m.name)) {
        report.warnings.push(`${m.name} is not covered by ${manifest.name}; its integrity is not checked`);
      }
    }
    for (const e of manifest.entries) {
      if (!present.has(e.file)) {
        problems.add(
          new FdError('FD_OVF_MISSING_FILE', `${manifest.name} lists ${e.file}, which is not in the package`),
        );
      }
    }
  }
  if (cert) {
    if (!manifest) {
      problems.add(new FdError('FD_OVF_BAD_CERT', `${cert.name} is present but there is no manifest to verify`));
    } else {
      try {
        report.certificate = verifyManifestSignature(cert.text, manifest.name, manifest.raw, cert.name);
      } catch (err) {
        if (!(err instanceof FdError)) throw err;
        problems.add(err);
      }
    }
  }
}

/** Descriptor bytes as text: UTF-8 (with or without BOM) or UTF-16 with a BOM. */
export function decodeDescriptor(raw: Buffer): string {
  if (raw[0] === 0xff && raw[1] === 0xfe) return raw.subarray(2).toString('utf16le');
  if (raw[0] === 0xfe && raw[1] === 0xff) {
    const le = Buffer.from(raw.subarray(2));
    le.swap16();
    return le.toString('utf16le');
  }
  return raw.toString('utf8');
}
