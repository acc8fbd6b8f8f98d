/**
 * OVF allocation units ("byte * 2^30", "byte*2^30", "MegaBytes", "KB", none) turned into a
 * byte multiplier. DSP0004 programmatic units allow several factors ("byte * 2^10 * 1024");
 * named units are read the way VMware and VirtualBox write them, as binary multiples.
 */
import { FdError } from '../core/errors.js';

const NAMED: Record<string, number> = {
  byte: 1,
  bytes: 1,
  b: 1,
  kilobyte: 2 ** 10,
  kilobytes: 2 ** 10,
  kb: 2 ** 10,
  kib: 2 ** 10,
  megabyte: 2 ** 20,
  megabytes: 2 ** 20,
  mb: 2 ** 20,
  mib: 2 ** 20,
  gigabyte: 2 ** 30,
  gigabytes: 2 ** 30,
  gb: 2 ** 30,
  gib: 2 ** 30,
  terabyte: 2 ** 40,
  terabytes: 2 ** 40,
  tb: 2 ** 40,
  tib: 2 ** 40,
};

/** Bytes per unit; undefined input means bytes. Throws FD_OVF_BAD_UNITS for anything else. */
export function byteMultiplier(units: string | undefined, what: string): number {
  if (units === undefined || units.trim() === '') return 1;
  const text = units.trim().toLowerCase();
  if (text in NAMED) return NAMED[text]!;
  const terms = text.split('*').map((t) => t.trim());
  if (terms[0] !== 'byte' && terms[0] !== 'bytes') throw badUnits(units, what);
  let mult = 1;
  for (const term of terms.slice(1)) {
    const m = /^(\d+)(?:\s*\^\s*(-?\d+))?$/.exec(term);
    if (!m) throw badUnits(units, what);
    const f = Number(m[1]) ** Number(m[2] ?? 1);
    mult *= f;
  }
  if (!Number.isSafeInteger(mult) || mult < 1) throw badUnits(units, what);
  return mult;
}

function badUnits(units: string, what: string): FdError {
  return new FdError('FD_OVF_BAD_UNITS', `${what}: allocation units "${units}" are not a byte unit`, {
    hint: 'use a unit like "byte * 2^20" or "MegaBytes"',
  });
}

/** quantity * units as a safe integer byte count. */
export function toBytes(quantity: string, units: string | undefined, what: string): number {
  const q = quantity.trim();
  if (!/^\d+$/.test(q)) {
    throw new FdError('FD_OVF_BAD_NUMBER', `${what}: "${quantity}" is not a whole number`, {
      hint: 'the descriptor is damaged; fix the value',
    });
  }
  const bytes = Number(q) * byteMultiplier(units, what);
  if (!Number.isSafeInteger(bytes)) {
    throw new FdError('FD_OVF_BAD_NUMBER', `${what}: ${quantity} ${units ?? 'bytes'} is too large`);
  }
  return bytes;
}
