/** Reading an .ovf with its files beside it (a directory, or a descriptor alone). */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FdError, isErrno } from '../core/errors.js';
import { InlineDigest, type Digester } from './digest.js';
import { parseManifest } from './manifest.js';
import { parseOvf } from './parse.js';
import { openMember, readMemberOptional } from './member-file.js';
import type { ReadPackageOptions, PackageMember, PackageReport } from './package-types.js';
import {
  decodeDescriptor,
  MAX_DESCRIPTOR_BYTES,
  READ_CHUNK_BYTES,
  Problems,
  tapped,
  gunzip,
  drain,
  deliver,
  chunkName,
  checkDigest,
  finish,
} from './package-common.js';

export async function readOvfDir(path: string, opts: ReadPackageOptions): Promise<PackageReport> {
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

export function isLocalHref(href: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(href) && !href.startsWith('/') && !href.split(/[\\/]/).includes('..');
}

export async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false;
    throw err;
  }
}

export async function chunkNames(dir: string, href: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; await exists(join(dir, chunkName(href, i))); i++) out.push(chunkName(href, i));
  return out;
}
