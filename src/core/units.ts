/**
 * Human sizes and durations, parsed once at the edge. Sizes accept K/M/G/T with optional
 * "i"/"iB"/"B" suffixes and are binary (1K = 1024), the way qemu-img and Proxmox read them.
 */
import { FdError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: KiB, m: MiB, g: GiB, t: TiB, p: TiB * 1024 };

export function parseSize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) throw badSize(String(text));
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw badSize(text);
  const value = Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(Math.round(value))) throw badSize(text);
  return Math.round(value);
}

function badSize(text: string): FdError {
  return new FdError('FD_BAD_SIZE', `"${text}" is not a size`, {
    hint: 'write a size like 512M, 2G or 1073741824',
  });
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDurationMs(text: string | number): number {
  if (typeof text === 'number') return text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) {
    throw new FdError('FD_BAD_DURATION', `"${text}" is not a duration`, {
      hint: 'write a duration like 500ms, 30s or 5m',
    });
  }
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!);
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${m}m${String(s).padStart(2, '0')}s`;
}
