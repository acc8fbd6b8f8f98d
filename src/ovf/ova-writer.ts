/**
 * Writes OVAs in the canonical member order (descriptor, manifest, then files in References
 * order) with a SHA256 manifest, into a temp file renamed into place when complete.
 * `exportOva` is the library half of `ovf export`: it turns each disk source into a
 * streamOptimized VMDK, fills in File sizes, writes the descriptor and packs the archive.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { produceFileAtomic } from '../core/atomic-file.js';
import { FdError } from '../core/errors.js';
import { writeStreamOptimizedVmdk, type DiskSource, type WriteVmdkOptions } from '../disk/vmdk/stream-writer.js';
import { formatManifest, type ManifestEntry } from './manifest.js';
import type { OvfDisk, OvfEntity, OvfFile } from './model.js';
import { safeMemberName } from './tar-reader.js';
import { TarWriter } from './tar-writer.js';
import { writeOvf, type OvfWriteModel, type WriteOvfOptions } from './writer.js';

export interface OvaMemberSource {
  /** Member name (the File href). */
  name: string;
  path: string;
  /** Known SHA256 (saves a read pass). */
  sha256?: string;
}

export interface WriteOvaInput {
  descriptorName: string;
  descriptor: string;
  /** Files in References order. */
  files: OvaMemberSource[];
}

export interface WriteOvaResult {
  path: string;
  sizeBytes: number;
  members: { name: string; sizeBytes: number; sha256: string }[];
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

export async function writeOva(outPath: string, input: WriteOvaInput): Promise<WriteOvaResult> {
  const names = [input.descriptorName, ...input.files.map((f) => f.name)];
  for (const n of names) {
    if (safeMemberName(n, basename(outPath)) !== n) {
      throw new FdError('FD_OVA_UNSAFE_MEMBER', `member name "${n}" is not a plain relative name`);
    }
  }
  if (new Set(names).size !== names.length)
    throw new FdError('FD_OVA_DUPLICATE_MEMBER', 'two OVA members share a name');
  const descriptor = Buffer.from(input.descriptor);
  const members: WriteOvaResult['members'] = [
    {
      name: input.descriptorName,
      sizeBytes: descriptor.length,
      sha256: createHash('sha256').update(descriptor).digest('hex'),
    },
  ];
  for (const f of input.files) {
    const st = await stat(f.path);
    members.push({ name: f.name, sizeBytes: st.size, sha256: f.sha256 ?? (await sha256File(f.path)) });
  }
  const entries: ManifestEntry[] = members.map((m) => ({ algorithm: 'sha256', file: m.name, digest: m.sha256 }));
  const manifest = Buffer.from(formatManifest(entries));
  const mfName = input.descriptorName.replace(/\.ovf$/i, '') + '.mf';
  let total = 0;
  await produceFileAtomic(outPath, async (tmp) => {
    const fh = await open(tmp, 'w');
    try {
      const tar = new TarWriter(fh);
      await tar.addBuffer(input.descriptorName, descriptor);
      await tar.addBuffer(mfName, manifest);
      for (const [i, f] of input.files.entries()) {
        const size = members[i + 1]!.sizeBytes;
        await tar.addStream(f.name, size, createReadStream(f.path, { highWaterMark: 1 << 20 }));
      }
      await tar.finish();
      total = tar.offset;
    } finally {
      await fh.close();
    }
  });
  return { path: outPath, sizeBytes: total, members };
}

export interface ExportDisk {
  diskId: string;
  source: DiskSource;
}

export interface ExportOvaOptions extends WriteOvfOptions, WriteVmdkOptions {
  /** Base name for the descriptor and disk members (defaults to the OVA's name). */
  name?: string;
  /** Directory for the temporary VMDKs (defaults beside the OVA). */
  workDir?: string;
}

/**
 * Converts each disk to a streamOptimized VMDK, writes a descriptor whose References and
 * DiskSection describe exactly those files, and packs the OVA. The model's files/disks are
 * replaced: every disk with a source gets one File, in DiskSection order.
 */
export async function exportOva(
  outPath: string,
  model: OvfWriteModel,
  disks: ExportDisk[],
  opts: ExportOvaOptions = {},
): Promise<WriteOvaResult & { descriptor: string }> {
  const base = opts.name ?? basename(outPath).replace(/\.ova$/i, '');
  const work = await mkdtemp(join(opts.workDir ?? dirname(outPath), `.${base}.export-`));
  try {
    const files: OvfFile[] = [];
    const outDisks: OvfDisk[] = [];
    const sources: OvaMemberSource[] = [];
    for (const [i, d] of disks.entries()) {
      const href = `${base}-disk${i + 1}.vmdk`;
      const path = join(work, href);
      const res = await writeStreamOptimizedVmdk(d.source, path, opts);
      const fileId = `file${i + 1}`;
      files.push({ id: fileId, href, sizeBytes: res.fileSizeBytes });
      // populatedSize described the old file; the new VMDK's own size is in References.
      const { populatedSizeBytes: _stale, ...prev } = model.disks.find((x) => x.diskId === d.diskId) ?? {};
      outDisks.push({
        ...prev,
        diskId: d.diskId,
        capacityBytes: res.capacityBytes,
        fileRef: fileId,
        format: 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized',
        formatKind: 'vmdk-streamOptimized',
      });
      sources.push({ name: href, path, sha256: res.sha256 });
    }
    // Disks without a source (empty data disks) keep their capacity and get no file.
    for (const d of model.disks) {
      if (!disks.some((x) => x.diskId === d.diskId)) {
        const { fileRef: _drop, ...rest } = d;
        outDisks.push(rest);
      }
    }
    // Media files (ISOs) are not exported: drives that pointed at one come out empty.
    const descriptor = writeOvf({ ...model, files, disks: outDisks, entity: withoutMedia(model.entity) }, opts);
    const result = await writeOva(outPath, { descriptorName: `${base}.ovf`, descriptor, files: sources });
    return { ...result, descriptor };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function withoutMedia(e: OvfEntity): OvfEntity {
  if (e.kind === 'VirtualSystemCollection') return { ...e, members: e.members.map(withoutMedia) };
  return {
    ...e,
    drives: e.drives.map(({ fileRef: _drop, ...d }) => d),
  };
}
