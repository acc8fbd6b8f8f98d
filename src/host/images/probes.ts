/**
 * Reads what the tiny guest's probes print on its serial console (see guest/fdprobe.c and the
 * guest scripts) as typed events. Probe lines look like `FD-<KIND> <fields> #`; the trailing
 * " #" is the end mark: kernel printk can cut into a line on the console, and a cut line
 * (no end mark) is dropped rather than read as a wrong number.
 *
 * Feed it chunks as they arrive (any split, CRLF or LF); it keeps the partial last line until
 * its newline comes. Everything that is not a probe line (kernel log, shell) is ignored.
 */

export type ProbeEvent =
  | { kind: 'heartbeat'; seq: number; monotonicNs: bigint }
  | { kind: 'counter'; n: bigint }
  | { kind: 'counter-start'; n: bigint }
  | { kind: 'counter-error'; detail: string }
  | { kind: 'uptime'; uptimeS: number }
  | { kind: 'cpus'; online: number }
  | { kind: 'mem'; totalKib: number }
  | { kind: 'ready'; uptimeS: number }
  | { kind: 'ip'; address: string; dev: string | undefined; mac: string | undefined }
  | { kind: 'seed'; key: string; value: string }
  | { kind: 'ovfenv'; key: string; value: string }
  | { kind: 'powerbtn' }
  | { kind: 'poweroff' }
  | { kind: 'shutdown' }
  | { kind: 'boot-stage'; stage: string; uptimeS: number }
  | { kind: 'boot-error'; detail: string }
  | { kind: 'other'; tag: string; text: string };

const START = /(^|[^A-Za-z0-9-])FD-[A-Z]/;
const LINE = /^FD-([A-Z][A-Z0-9-]*)(?: (.*?))? #$/;
const UINT = /^\d+$/;
const DECIMAL = /^\d+(?:\.\d+)?$/;

/** One console line (without its newline) to an event, or null when it is not a whole probe line. */
export function parseProbeLine(raw: string): ProbeEvent | null {
  // Text without a newline may precede a probe line (busybox's "Please press Enter to activate
  // this console.", a shell prompt); the end mark still guarantees the probe line is whole.
  const at = START.exec(raw);
  if (!at) return null;
  const line = raw.slice(at.index + at[1]!.length).replace(/\r+$/, '');
  const m = LINE.exec(line);
  if (!m) return null;
  const tag = m[1]!;
  const rest = m[2] ?? '';
  const f = rest.split(' ');
  switch (tag) {
    case 'HB':
      if (f.length !== 2 || !UINT.test(f[0]!) || !UINT.test(f[1]!)) return null;
      return { kind: 'heartbeat', seq: Number(f[0]), monotonicNs: BigInt(f[1]!) };
    case 'COUNTER':
    case 'COUNTER-START':
      if (f.length !== 1 || !UINT.test(f[0]!)) return null;
      return { kind: tag === 'COUNTER' ? 'counter' : 'counter-start', n: BigInt(f[0]!) };
    case 'COUNTER-ERROR':
      return { kind: 'counter-error', detail: rest };
    case 'UPTIME':
      if (f.length !== 1 || !DECIMAL.test(f[0]!)) return null;
      return { kind: 'uptime', uptimeS: Number(f[0]) };
    case 'CPUS':
      if (f.length !== 1 || !UINT.test(f[0]!)) return null;
      return { kind: 'cpus', online: Number(f[0]) };
    case 'MEM':
      if (f.length !== 1 || !UINT.test(f[0]!)) return null;
      return { kind: 'mem', totalKib: Number(f[0]) };
    case 'READY': {
      const up = /^uptime=(\d+(?:\.\d+)?)$/.exec(rest);
      return up ? { kind: 'ready', uptimeS: Number(up[1]) } : null;
    }
    case 'IP': {
      if (!/^[0-9a-fA-F.:]+$/.test(f[0] ?? '')) return null;
      const kv = keyValues(f.slice(1));
      return { kind: 'ip', address: f[0]!, dev: kv.get('dev'), mac: kv.get('mac') };
    }
    case 'SEED':
    case 'OVFENV': {
      const eq = rest.indexOf('=');
      if (eq <= 0) return null;
      return { kind: tag === 'SEED' ? 'seed' : 'ovfenv', key: rest.slice(0, eq), value: rest.slice(eq + 1) };
    }
    case 'POWERBTN':
      return { kind: 'powerbtn' };
    case 'POWEROFF':
      return { kind: 'poweroff' };
    case 'SHUTDOWN':
      return { kind: 'shutdown' };
    case 'BOOT': {
      const st = /^stage=(\S+) uptime=(\d+(?:\.\d+)?)$/.exec(rest);
      if (st) return { kind: 'boot-stage', stage: st[1]!, uptimeS: Number(st[2]) };
      return { kind: 'other', tag, text: rest };
    }
    case 'BOOT-ERROR':
      return { kind: 'boot-error', detail: rest };
    default:
      return { kind: 'other', tag, text: rest };
  }
}

function keyValues(fields: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const f of fields) {
    const eq = f.indexOf('=');
    if (eq > 0) out.set(f.slice(0, eq), f.slice(eq + 1));
  }
  return out;
}

/** Splits a console byte stream into lines and emits probe events; keeps partial lines. */
export class ProbeParser {
  private partial = '';
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });

  /** Events in the complete lines of this chunk (plus the partial line left from before). */
  push(chunk: Buffer | string): ProbeEvent[] {
    this.partial += typeof chunk === 'string' ? chunk : this.decoder.decode(chunk, { stream: true });
    const lines = this.partial.split('\n');
    this.partial = lines.pop()!;
    // A line this long is not a probe line: drop it instead of growing without bound.
    if (this.partial.length > 64 * 1024) this.partial = '';
    const out: ProbeEvent[] = [];
    for (const l of lines) {
      const ev = parseProbeLine(l);
      if (ev) out.push(ev);
    }
    return out;
  }

  /** The unfinished line held back until its newline arrives. */
  get pending(): string {
    return this.partial;
  }
}
