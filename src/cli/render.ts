/** Turning handler results into text for people: tables, key/value blocks, progress bars. */
import { formatDuration, formatSize } from '../core/units.js';
import type { ProgressSnapshot } from '../core/progress.js';

export function table(rows: Record<string, unknown>[], columns?: string[]): string {
  if (rows.length === 0) return '(none)';
  const cols = columns ?? Object.keys(rows[0]!);
  const cells = rows.map((r) => cols.map((c) => cell(r[c])));
  const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]): string =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(cols.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (Array.isArray(v)) return v.map(cell).join(',');
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function keyValues(obj: Record<string, unknown>): string {
  const keys = Object.keys(obj);
  const w = Math.max(...keys.map((k) => k.length));
  return keys
    .map((k) => {
      const v = obj[k];
      const text = v !== null && typeof v === 'object' ? JSON.stringify(v) : cell(v);
      return `${(k + ':').padEnd(w + 1)} ${text}`;
    })
    .join('\n');
}

export function renderDefault(result: unknown): string {
  if (result === undefined || result === null) return '';
  if (Array.isArray(result)) return table(result as Record<string, unknown>[]);
  if (typeof result === 'object') return keyValues(result as Record<string, unknown>);
  return String(result);
}

/** One line of a progress bar, redrawn in place on a terminal. */
export function progressLine(label: string, p: ProgressSnapshot, width = 30): string {
  const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
  const filled = Math.round(frac * width);
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const amount =
    p.unit === 'bytes'
      ? `${formatSize(p.done)}/${formatSize(p.total)} ${formatSize(p.ratePerS)}/s`
      : `${p.done}/${p.total}`;
  const eta = p.etaS === null ? '' : ` eta ${formatDuration(p.etaS * 1000)}`;
  return `${label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${amount}${eta}${p.message ? ' ' + p.message : ''}`;
}
