/**
 * Reads an appliance, .ova or .ovf with its files beside it, in one forward pass: the
 * descriptor is parsed, the manifest and signature checked, and every referenced file is handed
 * to `onFile` as a stream (gunzipped and de-chunked) while its digest is computed on the fly,
 * so an importer converts each disk exactly once, straight out of the archive.
 */
import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { FdError, isErrno } from '../core/errors.js';
import { verifyManifestSignature, type CertCheck } from './cert.js';
import { DigestThread, InlineDigest, type Digester } from './digest.js';
import { mismatch, parseManifest, type DigestAlgorithm, type ManifestEntry } from './manifest.js';
import type { OvfEnvelope, OvfFile, OvfProblem } from './model.js';
import { parseOvf, type ParseOptions } from './parse.js';
import { readTar, type TarEntry } from './tar-reader.js';
import { openMember, readMemberOptional } from './member-file.js';

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

const MAX_DESCRIPTOR_BYTES = 32 << 20;
const MAX_SMALL_MEMBER_BYTES = 16 << 20;
const ALL_ALGORITHMS: DigestAlgorithm[] = ['sha1', 'sha256', 'sha512'];
const READ_CHUNK_BYTES = 4 << 20;
/** Members at least this big are hashed on a worker thread. */
const OFF_THREAD_BYTES = 1 << 20;

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

/** True when the file starts like a tar archive rather than XML. */
async function looksLikeTar(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await fh.read(buf, 0, 512, 0);
    if (bytesRead < 512) return false;
    return (
      buf.toString('latin1', 257, 262) === 'ustar' || !/^\s*(<|\uFEFF|\xEF\xBB\xBF)/.test(buf.toString('latin1', 0, 16))
    );
  } finally {
    await fh.close();
  }
}

export async function readPackage(path: string, opts: ReadPackageOptions = {}): Promise<PackageReport> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) throw new FdError('FD_OVF_NOT_FOUND', `${path} does not exist`, { cause: err });
    throw err;
  }
  if (st.isDirectory()) throw new FdError('FD_OVF_NOT_FOUND', `${path} is a directory; pass the .ovf or .ova file`);
  const tar =
    path.toLowerCase().endsWith('.ova') || (!path.toLowerCase().endsWith('.ovf') && (await looksLikeTar(path)));
  return tar ? readOva(path, st.size, opts) : readOvfDir(path, opts);
}

/** Collects problems or throws them, as the caller asked. */
class Problems {
  readonly list: OvfProblem[] = [];
  constructor(private readonly collect: boolean) {}
  add(err: FdError): void {
    if (!this.collect) throw err;
    this.list.push({ code: err.code, message: err.message });
  }
}

/** Hashes a member's bytes as they pass; with no manifest known yet, every algorithm. */
function tapped(src: AsyncIterable<Buffer>, taps: Digester[], count: { n: number }): AsyncIterable<Buffer> {
  return (async function* () {
    for await (const c of src) {
      for (const t of taps) t.update(c);
      for (const t of taps) if (t.ready) await t.ready();
      count.n += c.length;
      yield c;
    }
  })();
}

function gunzip(src: AsyncIterable<Buffer>, name: string): AsyncIterable<Buffer> {
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

async function drain(src: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of src);
}

/**
 * Hands a file to the handler behind a shield: a handler that stops early (break) must not
 * close the underlying stream, because the rest is drained afterwards so the digest covers
 * every byte and the archive stays in step.
 */
async function deliver(opts: ReadPackageOptions, file: OvfFile, body: AsyncIterable<Buffer>): Promise<void> {
  const it = body[Symbol.asyncIterator]();
  const shielded: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: () => ({ next: () => it.next() }) };
  if (opts.onFile) await opts.onFile({ file, body: shielded });
  for (let n = await it.next(); !n.done; n = await it.next());
}

function chunkName(href: string, i: number): string {
  return `${href}.${String(i).padStart(9, '0')}`;
}

async function checkDigest(
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

async function readOva(path: string, totalBytes: number, opts: ReadPackageOptions): Promise<PackageReport> {
  const source = basename(path);
  const problems = new Problems(opts.collectProblems ?? false);
  const warnings: string[] = [];
  const members: PackageMember[] = [];
  const tapsOf = new Map<string, Digester[]>();
  let envelope: OvfEnvelope | undefined;
  let descriptorName = '';
  let descriptorText = '';
  let manifest: { name: string; entries: ManifestEntry[]; raw: Buffer } | undefined;
  let manifestMap: Map<string, ManifestEntry> | undefined;
  let certText: { name: string; text: string } | undefined;
  const seen = new Set<string>();

  // Large reads: fewer thread-pool round trips per GiB (each one is a wakeup on a busy host).
  const it = readTar(createReadStream(path, { highWaterMark: READ_CHUNK_BYTES }), { source, totalBytes });
  let pending: TarEntry | undefined;
  const nextEntry = async (): Promise<TarEntry | undefined> => {
    if (pending) {
      const p = pending;
      pending = undefined;
      return p;
    }
    const n = await it.next();
    return n.done ? undefined : n.value;
  };
  const algorithmsFor = (name: string): DigestAlgorithm[] => {
    if (!manifestMap) return ALL_ALGORITHMS;
    const e = manifestMap.get(name);
    return e ? [e.algorithm] : [];
  };
  const thread = new DigestThread();
  const digesters = (name: string, sizeBytes: number): Digester[] =>
    algorithmsFor(name).map((a) =>
      sizeBytes >= OFF_THREAD_BYTES && opts.hashOffThread !== false ? thread.open(a) : new InlineDigest(a),
    );

  try {
    for (let entry = await nextEntry(); entry; entry = await nextEntry()) {
      if (entry.type === 'directory') continue;
      const name = entry.name;
      const lower = name.toLowerCase();
      if (seen.has(name))
        problems.add(new FdError('FD_OVA_DUPLICATE_MEMBER', `${source}: member "${name}" appears twice`));
      seen.add(name);
      const member: PackageMember = { name, sizeBytes: entry.sizeBytes };
      members.push(member);

      if (!envelope && lower.endsWith('.ovf')) {
        if (members.length > 1) warnings.push(`${source}: the descriptor ${name} is not the first member`);
        if (entry.sizeBytes > MAX_DESCRIPTOR_BYTES) {
          throw new FdError('FD_OVF_TOO_LARGE', `${source}: descriptor ${name} is ${entry.sizeBytes} bytes`);
        }
        const taps = digesters(name, entry.sizeBytes);
        const count = { n: 0 };
        const chunks: Buffer[] = [];
        for await (const c of tapped(entry.body(), taps, count)) chunks.push(c);
        const raw = Buffer.concat(chunks);
        tapsOf.set(name, taps);
        descriptorName = name;
        descriptorText = decodeDescriptor(raw);
        envelope = parseOvf(descriptorText, { ...opts, source: name });
        await checkDigest(problems, manifestMap, name, taps, member);
        if (opts.descriptorOnly) break;
        continue;
      }
      if ((!manifest && lower.endsWith('.mf')) || (!certText && lower.endsWith('.cert'))) {
        if (entry.sizeBytes > MAX_SMALL_MEMBER_BYTES) {
          throw new FdError(
            'FD_OVF_TOO_LARGE',
            `${source}: ${name} is ${entry.sizeBytes} bytes; manifests and certificates are small`,
          );
        }
      }
      if (!manifest && lower.endsWith('.mf')) {
        const chunks: Buffer[] = [];
        for await (const c of entry.body()) chunks.push(c);
        const raw = Buffer.concat(chunks);
        const entries = parseManifest(raw.toString('utf8'), name);
        manifest = { name, entries, raw };
        manifestMap = new Map(entries.map((e) => [e.file, e]));
        // Members hashed before the manifest arrived are checked now.
        for (const m of members) {
          const taps = tapsOf.get(m.name);
          if (taps) await checkDigest(problems, manifestMap, m.name, taps, m);
        }
        continue;
      }
      if (!certText && lower.endsWith('.cert')) {
        const chunks: Buffer[] = [];
        for await (const c of entry.body()) chunks.push(c);
        certText = { name, text: Buffer.concat(chunks).toString('utf8') };
        continue;
      }
      if (!envelope) {
        problems.add(
          new FdError('FD_OVA_BAD_ORDER', `${source}: member "${name}" comes before the descriptor`, {
            hint: 'an OVA must start with its .ovf descriptor',
          }),
        );
        await drain(entry.body());
        continue;
      }
      const file =
        envelope.files.find((f) => f.href === name) ??
        envelope.files.find((f) => f.chunkSizeBytes !== undefined && name === chunkName(f.href, 0));
      if (!file) {
        warnings.push(`${source}: member "${name}" is not referenced by the descriptor`);
        const taps = digesters(name, entry.sizeBytes);
        for await (const c of tapped(entry.body(), taps, { n: 0 })) void c;
        tapsOf.set(name, taps);
        await checkDigest(problems, manifestMap, name, taps, member);
        continue;
      }

      // A referenced file: one member, or a run of chunk members joined into one stream.
      const stored = { n: 0 };
      const pieces: { member: PackageMember; taps: Digester[] }[] = [];
      const first = entry;
      const chunked = file.chunkSizeBytes !== undefined && name === chunkName(file.href, 0);
      const raw: AsyncIterable<Buffer> = (async function* () {
        let cur: TarEntry | undefined = first;
        let curMember = member;
        for (let i = 0; cur; i++) {
          const taps = digesters(cur.name, cur.sizeBytes);
          pieces.push({ member: curMember, taps });
          yield* tapped(cur.body(), taps, stored);
          if (!chunked) return;
          const nxt = await nextEntry();
          if (!nxt) return;
          if (nxt.name !== chunkName(file.href, i + 1)) {
            pending = nxt;
            return;
          }
          seen.add(nxt.name);
          curMember = { name: nxt.name, sizeBytes: nxt.sizeBytes };
          members.push(curMember);
          cur = nxt;
        }
      })();
      await deliver(opts, file, file.compression === 'gzip' ? gunzip(raw, file.href) : raw);
      for (const p of pieces) {
        tapsOf.set(p.member.name, p.taps);
        await checkDigest(problems, manifestMap, p.member.name, p.taps, p.member);
      }
      if (file.sizeBytes !== undefined && file.sizeBytes !== stored.n) {
        problems.add(
          new FdError(
            'FD_OVF_SIZE_MISMATCH',
            `${file.href}: the package holds ${stored.n} bytes, ovf:size says ${file.sizeBytes}`,
            {
              hint: 'the file was changed after the descriptor was written',
            },
          ),
        );
      }
    }
  } finally {
    await it.return(undefined);
    await thread.close();
  }
  if (!envelope) {
    throw new FdError('FD_OVA_NO_DESCRIPTOR', `${source} holds no .ovf descriptor`, { hint: 'this is not an OVA' });
  }
  const report: PackageReport = {
    kind: 'ova',
    path,
    descriptorName,
    descriptorText,
    envelope,
    members,
    warnings,
    problems: problems.list,
  };
  if (opts.descriptorOnly) return report;
  finish(report, problems, manifest, certText, seen, source);
  return report;
}

/** Checks that need the whole package: missing files, manifest coverage, the signature. */
function finish(
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

async function readOvfDir(path: string, opts: ReadPackageOptions): Promise<PackageReport> {
  const dir = dirname(path);
  const confined = opts.confined ?? false;
  const source = basename(path);
  const problems = new Problems(opts.collectProblems ?? false);
  const st = await stat(path);
  if (st.size > MAX_DESCRIPTOR_BYTES) throw new FdError('FD_OVF_TOO_LARGE', `${source} is ${st.size} bytes`);
  const raw = await readFile(path);
  const descriptorText = decodeDescriptor(raw);
  const envelope = parseOvf(descriptorText, { ...opts, source });
  const members: PackageMember[] = [{ name: source, sizeBytes: raw.length }];
  const report: PackageReport = {
    kind: 'ovf',
    path,
    descriptorName: source,
    descriptorText,
    envelope,
    members,
    warnings: [],
    problems: problems.list,
  };
  if (opts.descriptorOnly) return report;

  const stem = source.replace(/\.ovf$/i, '');
  const mfName = `${stem}.mf`;
  const mfRaw = await readMemberOptional(dir, mfName, confined);
  const manifest = mfRaw
    ? { name: mfName, entries: parseManifest(mfRaw.toString('utf8'), mfName), raw: mfRaw }
    : undefined;
  const manifestMap = manifest ? new Map(manifest.entries.map((e) => [e.file, e])) : undefined;
  const present = new Set<string>([source]);
  const hashFile = (name: string): Digester[] => {
    const e = manifestMap?.get(name);
    return e ? [new InlineDigest(e.algorithm)] : [];
  };
  const descTaps = hashFile(source);
  for (const t of descTaps) t.update(raw);
  await checkDigest(problems, manifestMap, source, descTaps, members[0]!);

  for (const file of envelope.files) {
    if (
      envelope.problems.some((p) => p.code === 'FD_OVF_UNSAFE_HREF' || p.code === 'FD_OVF_EXTERNAL_FILE') &&
      !isLocalHref(file.href)
    )
      continue;
    const names = file.chunkSizeBytes !== undefined ? await chunkNames(dir, file.href) : [file.href];
    if (names.length === 0 || !(await exists(join(dir, names[0]!)))) continue; // reported by finish()
    const stored = { n: 0 };
    const pieces: { member: PackageMember; taps: Digester[] }[] = [];
    const rawBody = (async function* () {
      for (const n of names) {
        const fh = await openMember(dir, n, confined);
        const member = { name: n, sizeBytes: (await fh.stat()).size };
        members.push(member);
        present.add(n);
        const taps = hashFile(n);
        pieces.push({ member, taps });
        yield* tapped(fh.createReadStream({ highWaterMark: READ_CHUNK_BYTES }), taps, stored);
      }
    })();
    await deliver(opts, file, file.compression === 'gzip' ? gunzip(rawBody, file.href) : rawBody);
    for (const p of pieces) await checkDigest(problems, manifestMap, p.member.name, p.taps, p.member);
    if (file.sizeBytes !== undefined && file.sizeBytes !== stored.n) {
      problems.add(
        new FdError(
          'FD_OVF_SIZE_MISMATCH',
          `${file.href}: the file has ${stored.n} bytes, ovf:size says ${file.sizeBytes}`,
          {
            hint: 'the file was changed after the descriptor was written',
          },
        ),
      );
    }
  }
  if (manifest) {
    present.add(manifest.name);
    // Files the manifest lists but the descriptor does not reference are still checked.
    for (const e of manifest.entries) {
      if (present.has(e.file) || !isLocalHref(e.file) || !(await exists(join(dir, e.file)))) continue;
      const taps = [new InlineDigest(e.algorithm)];
      const fh = await openMember(dir, e.file, confined);
      const member: PackageMember = { name: e.file, sizeBytes: (await fh.stat()).size };
      await drain(tapped(fh.createReadStream(), taps, { n: 0 }));
      members.push(member);
      present.add(e.file);
      await checkDigest(problems, manifestMap, e.file, taps, member);
    }
  }
  const certName = `${stem}.cert`;
  const certRaw = await readMemberOptional(dir, certName, confined);
  finish(
    report,
    problems,
    manifest,
    certRaw ? { name: certName, text: certRaw.toString('utf8') } : undefined,
    present,
    source,
  );
  return report;
}

function isLocalHref(href: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(href) && !href.startsWith('/') && !href.split(/[\\/]/).includes('..');
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

async function chunkNames(dir: string, href: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; await exists(join(dir, chunkName(href, i))); i++) out.push(chunkName(href, i));
  return out;
}
