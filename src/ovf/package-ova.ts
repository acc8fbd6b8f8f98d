/** Reading an .ova: one pass over the tar stream, descriptor first, members checked against the manifest as they stream by. */
import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { FdError } from '../core/errors.js';
import { DigestThread, InlineDigest, type Digester } from './digest.js';
import { parseManifest, type DigestAlgorithm, type ManifestEntry } from './manifest.js';
import type { OvfEnvelope } from './model.js';
import { parseOvf } from './parse.js';
import { readTar, type TarEntry } from './tar-reader.js';
import type { ReadPackageOptions, PackageMember, PackageReport } from './package-types.js';
import {
  decodeDescriptor,
  MAX_DESCRIPTOR_BYTES,
  MAX_SMALL_MEMBER_BYTES,
  ALL_ALGORITHMS,
  READ_CHUNK_BYTES,
  OFF_THREAD_BYTES,
  Problems,
  tapped,
  gunzip,
  drain,
  deliver,
  chunkName,
  checkDigest,
  finish,
} from './package-common.js';

export async function readOva(path: string, totalBytes: number, opts: ReadPackageOptions): Promise<PackageReport> {
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
