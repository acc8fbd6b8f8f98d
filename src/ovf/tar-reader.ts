/**
 * Streaming tar reader for OVAs: ustar, GNU (long names, base-256 sizes) and pax headers.
 * Members are yielded in archive order with a body to stream; nothing is extracted to disk.
 * Refuses what could write outside a target or lie about sizes: absolute paths, "..", links,
 * devices, sparse members, and members that claim more bytes than the archive holds.
 */
import { FdError } from '../core/errors.js';
import { ByteReader, type ByteSource } from '../disk/vmdk/byte-reader.js';

const BLOCK = 512;

export interface TarEntry {
  name: string;
  sizeBytes: number;
  type: 'file' | 'directory';
  mtimeS: number;
  /** Offset of the member's data in the archive. */
  dataOffset: number;
  /** The member's data; may be consumed once. Unread data is skipped when iteration moves on. */
  body(): AsyncIterable<Buffer>;
}

export interface ReadTarOptions {
  source?: string;
  /** Archive size when known (a file): members claiming more are refused before reading. */
  totalBytes?: number;
}

function field(buf: Buffer, off: number, len: number): string {
  const s = buf.subarray(off, off + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? len : nul).toString('utf8');
}

function numeric(buf: Buffer, off: number, len: number, what: string, source: string): number {
  if (buf[off]! & 0x80) {
    // GNU base-256: big-endian two's complement with the top bit as the marker.
    let v = 0n;
    for (let i = 0; i < len; i++) v = (v << 8n) | BigInt(i === 0 ? buf[off]! & 0x7f : buf[off + i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw badTar(source, `${what} is out of range`);
    return Number(v);
  }
  const text = field(buf, off, len).trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw badTar(source, `${what} "${text}" is not octal`);
  return parseInt(text, 8);
}

function badTar(source: string, what: string): FdError {
  return new FdError('FD_OVA_BAD_TAR', `${source}: damaged tar header: ${what}`, {
    hint: 'the archive is corrupt or truncated; get a fresh copy',
  });
}

function checksumOk(block: Buffer): boolean {
  const stored = field(block, 148, 8).trim();
  if (!/^[0-7]+$/.test(stored)) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  const want = parseInt(stored, 8);
  return want === unsigned || want === signed;
}

/** A member path that stays inside the archive root, or an FD_OVA_UNSAFE_MEMBER error. */
export function safeMemberName(name: string, source: string): string {
  const unsafe = (why: string): FdError =>
    new FdError('FD_OVA_UNSAFE_MEMBER', `${source}: member "${name}" ${why}`, {
      hint: 'the archive tries to reach outside its own files; do not use it',
    });
  if (name.includes('\0')) throw unsafe('has a NUL byte in its name');
  if (name.startsWith('/') || /^[a-zA-Z]:[\\/]/.test(name)) throw unsafe('has an absolute path');
  const parts = name.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw unsafe('climbs out with ".."');
  if (parts.length === 0) throw unsafe('has an empty name');
  return parts.join('/');
}

function parsePax(data: Buffer, source: string): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const sp = data.indexOf(0x20, pos);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', pos, sp));
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > data.length) throw badTar(source, 'pax record length');
    const rec = data.toString('utf8', sp + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

export async function* readTar(input: ByteSource, opts: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const source = opts.source ?? 'archive';
  const r = new ByteReader(input);
  let first = true;
  let longName: string | undefined;
  let pax: Record<string, string> = {};
  const readMeta = async (size: number): Promise<Buffer> => {
    if (size > 1 << 20) throw badTar(source, `metadata member of ${size} bytes`);
    const data = await r.read(size);
    if (data.length < size) throw truncated(source);
    await r.skip((BLOCK - (size % BLOCK)) % BLOCK);
    return data;
  };
  try {
    for (;;) {
      const block = await r.read(BLOCK);
      if (block.length === 0) return; // no end-of-archive blocks: accepted, like GNU tar
      if (block.length < BLOCK) {
        if (first) throw notTar(source);
        throw truncated(source);
      }
      if (block.every((b) => b === 0)) return;
      if (!checksumOk(block)) {
        if (first) throw notTar(source);
        throw badTar(source, `checksum mismatch at byte ${r.position - BLOCK}`);
      }
      first = false;
      const magic = block.toString('latin1', 257, 263);
      const typeflag = String.fromCharCode(block[156]!);
      let size = numeric(block, 124, 12, 'size', source);
      const mtimeS = numeric(block, 136, 12, 'mtime', source);
      let name = field(block, 0, 100);
      if (magic === 'ustar\0') {
        const prefix = field(block, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      if (typeflag === 'L') {
        longName = (await readMeta(size)).toString('utf8').replace(/\0+$/, '');
        continue;
      }
      if (typeflag === 'x') {
        pax = { ...pax, ...parsePax(await readMeta(size), source) };
        continue;
      }
      if (typeflag === 'g') {
        await readMeta(size);
        continue;
      }
      if (typeflag === 'K') throw unsafeType(source, longName ?? name, 'a link');
      if (longName !== undefined) name = longName;
      if (pax.path !== undefined) name = pax.path;
      if (pax.size !== undefined) {
        if (!/^\d+$/.test(pax.size)) throw badTar(source, `pax size "${pax.size}"`);
        size = Number(pax.size);
      }
      longName = undefined;
      pax = {};
      let type: TarEntry['type'];
      if (typeflag === '0' || typeflag === '\0' || typeflag === '7') type = 'file';
      else if (typeflag === '5') type = 'directory';
      else if (typeflag === '1' || typeflag === '2') throw unsafeType(source, name, 'a link');
      else if (typeflag === 'S') throw unsafeType(source, name, 'a GNU sparse file');
      else throw unsafeType(source, name, `of tar type "${typeflag}" (device, fifo or unknown)`);
      const safe = safeMemberName(name, source);
      const dataOffset = r.position;
      if (opts.totalBytes !== undefined && dataOffset + size > opts.totalBytes) {
        throw new FdError(
          'FD_OVA_UNSAFE_MEMBER',
          `${source}: member "${safe}" claims ${size} bytes, but only ${opts.totalBytes - dataOffset} remain in the archive`,
          { hint: 'the archive is truncated or forged' },
        );
      }
      let remaining = size;
      let taken = false;
      const entry: TarEntry = {
        name: safe,
        sizeBytes: size,
        type,
        mtimeS,
        dataOffset,
        body: () => {
          if (taken) throw new Error(`body of ${safe} read twice`);
          taken = true;
          return (async function* () {
            while (remaining > 0) {
              let got = false;
              for await (const c of r.chunks(remaining)) {
                remaining -= c.length;
                got = true;
                yield c;
              }
              if (!got) throw truncated(source, safe);
            }
          })();
        },
      };
      yield entry;
      if (remaining > 0 && (await r.skip(remaining)) < remaining) throw truncated(source, safe);
      remaining = 0;
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      await r.skip(pad);
    }
  } finally {
    await r.close();
  }
}

function notTar(source: string): FdError {
  return new FdError('FD_OVA_NOT_TAR', `${source} is not a tar archive (no valid tar header at the start)`, {
    hint: 'an OVA is a tar file; pass the .ovf descriptor instead if this is not one',
  });
}

function truncated(source: string, member?: string): FdError {
  return new FdError('FD_OVA_TRUNCATED', `${source} ends inside ${member ? `member "${member}"` : 'a tar header'}`, {
    hint: 'the archive is incomplete: download or copy it again',
  });
}

function unsafeType(source: string, name: string, what: string): FdError {
  return new FdError('FD_OVA_UNSAFE_MEMBER', `${source}: member "${name}" is ${what}; OVAs hold only plain files`, {
    hint: 'the archive was not made by an OVF tool; do not use it',
  });
}
