/**
 * Reading LVM2 physical volumes without device-mapper (these hosts' kernels have none): the
 * label and PV header, the metadata area's current text metadata, and from it each logical
 * volume's place on the PV. A linear LV whose segments lie end to end on one PV becomes one
 * byte range a loop device can carry; other layouts (striped, mirrored, thin, spanning PVs out
 * of order) are reported as unsupported, per LV.
 * Format: lib/format_text/layout.h and the text metadata grammar of LVM2.
 */
import { FdError } from '../../core/errors.js';

const SECTOR = 512;
const LABEL_ID = 'LABELONE';
const LVM2_TYPE = 'LVM2 001';
const MDA_MAGIC = ' LVM2 x[5A%r0N*>';

export interface LvmLv {
  vg: string;
  name: string;
  /** Byte range on the PV, when the LV is one contiguous linear range. */
  offsetBytes?: number;
  sizeBytes?: number;
  unsupported?: string;
}

type Read = (offset: number, length: number) => Promise<Buffer>;

/** True when one of the first four sectors carries an LVM2 label. */
export async function isLvmPv(read: Read): Promise<boolean> {
  return (await findLabel(read)) !== null;
}

async function findLabel(read: Read): Promise<{ sector: number; buf: Buffer } | null> {
  const head = await read(0, 4 * SECTOR);
  for (let s = 0; s < 4; s++) {
    const b = head.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (b.toString('latin1', 0, 8) === LABEL_ID && b.toString('latin1', 24, 32) === LVM2_TYPE)
      return { sector: s, buf: b };
  }
  return null;
}

/** The logical volumes a PV's metadata describes, placed on that PV. */
export async function readLvm(read: Read): Promise<LvmLv[]> {
  const label = await findLabel(read);
  if (!label) return [];
  const pvh = label.buf.subarray(label.buf.readUInt32LE(20));
  const pvUuid = pvh.toString('latin1', 0, 32);
  // data areas, zero-terminated, then metadata areas, zero-terminated (16 bytes each)
  let off = 40;
  while (pvh.readBigUInt64LE(off) !== 0n) off += 16;
  off += 16;
  const mdas: Array<{ offset: number; size: number }> = [];
  while (off + 16 <= pvh.length && pvh.readBigUInt64LE(off) !== 0n) {
    mdas.push({ offset: Number(pvh.readBigUInt64LE(off)), size: Number(pvh.readBigUInt64LE(off + 8)) });
    off += 16;
  }
  if (!mdas.length) throw bad('the PV has no metadata area');
  const mda = mdas[0]!;
  const mh = await read(mda.offset, SECTOR);
  if (mh.toString('latin1', 4, 20) !== MDA_MAGIC) throw bad('the metadata area header is damaged');
  const textOff = Number(mh.readBigUInt64LE(40));
  const textSize = Number(mh.readBigUInt64LE(48));
  if (textSize <= 0 || textSize > mda.size) throw bad('the metadata area holds no metadata');
  // the text may wrap around the end of the circular buffer
  const start = mda.offset + textOff;
  const first = Math.min(textSize, mda.size - textOff);
  let text = (await read(start, first)).toString('latin1');
  if (first < textSize) text += (await read(mda.offset + SECTOR, textSize - first)).toString('latin1');
  return lvsOf(parseMetadata(text.replace(/\0+$/, '')), pvUuid);
}

function bad(why: string): FdError {
  return new FdError('FD_SCAN_LVM_BAD', `LVM metadata unreadable: ${why}`);
}

type Value = string | number | Value[] | Section;
interface Section {
  [k: string]: Value;
}

/** LVM2's text metadata: `name = value`, `name { ... }`, strings, numbers, lists, # comments. */
export function parseMetadata(text: string): Section {
  type Tok = { str: boolean; v: string };
  const tokens: Tok[] = [];
  for (const m of text.matchAll(/"((?:[^"\\]|\\.)*)"|([A-Za-z0-9_.+-]+)|([{}[\]=,])|#[^\n]*|\s+/g)) {
    if (m[1] !== undefined) tokens.push({ str: true, v: m[1] });
    else if (m[2] !== undefined) tokens.push({ str: false, v: m[2] });
    else if (m[3] !== undefined) tokens.push({ str: false, v: m[3] });
  }
  let i = 0;
  const isPunct = (t: Tok | undefined, p: string): boolean => !!t && !t.str && t.v === p;
  const value = (): Value => {
    const tok = tokens[i++];
    if (!tok) throw bad('unexpected end of metadata');
    if (tok.str) return tok.v;
    if (tok.v === '[') {
      const list: Value[] = [];
      while (tokens[i] && !isPunct(tokens[i], ']')) {
        list.push(value());
        if (isPunct(tokens[i], ',')) i++;
      }
      i++;
      return list;
    }
    const n = Number(tok.v);
    return Number.isFinite(n) ? n : tok.v;
  };
  const section = (top: boolean): Section => {
    const out: Section = {};
    for (;;) {
      const tok = tokens[i];
      if (!tok) {
        if (top) return out;
        throw bad('unterminated section');
      }
      i++;
      if (isPunct(tok, '}')) return out;
      const next = tokens[i++];
      if (isPunct(next, '{')) out[tok.v] = section(false);
      else if (isPunct(next, '=')) out[tok.v] = value();
      else throw bad(`unexpected token after ${tok.v}`);
    }
  };
  return section(true);
}

const isSection = (v: Value | undefined): v is Section => !!v && typeof v === 'object' && !Array.isArray(v);

function lvsOf(meta: Section, pvUuid: string): LvmLv[] {
  const out: LvmLv[] = [];
  for (const [vgName, vg] of Object.entries(meta)) {
    if (!isSection(vg) || !isSection(vg['physical_volumes'])) continue;
    const extentBytes = Number(vg['extent_size']) * SECTOR;
    const pvs = vg['physical_volumes'];
    const here = Object.entries(pvs).find(([, pv]) => isSection(pv) && String(pv['id']).replaceAll('-', '') === pvUuid);
    if (!here) continue;
    const [pvName, pv] = here as [string, Section];
    const peStart = Number(pv['pe_start']) * SECTOR;
    const lvs = isSection(vg['logical_volumes']) ? vg['logical_volumes'] : {};
    for (const [lvName, lv] of Object.entries(lvs)) {
      if (!isSection(lv)) continue;
      const segs = Object.entries(lv)
        .filter(([k, v]) => /^segment\d+$/.test(k) && isSection(v))
        .map(([, v]) => v as Section)
        .sort((a, b) => Number(a['start_extent']) - Number(b['start_extent']));
      const entry: LvmLv = { vg: vgName, name: lvName };
      let pos: number | undefined;
      let size = 0;
      for (const s of segs) {
        const stripes = s['stripes'];
        if (s['type'] !== 'striped' || Number(s['stripe_count']) !== 1 || !Array.isArray(stripes)) {
          entry.unsupported = `segment type ${String(s['type'])} with ${String(s['stripe_count'] ?? '?')} stripes`;
          break;
        }
        if (stripes[0] !== pvName) {
          entry.unsupported = 'it spans more than one physical volume';
          break;
        }
        const at = peStart + Number(stripes[1]) * extentBytes;
        if (pos !== undefined && at !== pos + size) {
          entry.unsupported = 'its segments are not contiguous on the PV';
          break;
        }
        pos ??= at;
        size += Number(s['extent_count']) * extentBytes;
      }
      if (!entry.unsupported && pos !== undefined) Object.assign(entry, { offsetBytes: pos, sizeBytes: size });
      else entry.unsupported ??= 'it has no segments';
      out.push(entry);
    }
  }
  return out;
}
