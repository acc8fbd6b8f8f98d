/**
 * Reads lab hosts' daemon logs (DATA/daemon.log, JSON lines with an ISO time `t`) to time the
 * steps of a failover as the daemons saw them: the leader's `host lost`, `failing over` and
 * `failed over`, the standby's `took over a VM from a lost host`. The lab's hosts share this
 * machine's clock, so these times compare with the bench's own Date.now().
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LogEntry {
  /** ms since the epoch */
  at: number;
  host: string;
  msg: string;
  fields: Record<string, unknown>;
}

/** Every JSON line of `host`'s daemon.log written at or after `sinceMs`. */
export async function daemonLogSince(host: { name: string; dataDir: string }, sinceMs: number): Promise<LogEntry[]> {
  const text = await readFile(join(host.dataDir, 'daemon.log'), 'utf8').catch(() => '');
  const out: LogEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a line cut by a SIGKILL mid-write
    }
    const at = typeof rec['t'] === 'string' ? Date.parse(rec['t']) : NaN;
    if (!Number.isFinite(at) || at < sinceMs || typeof rec['msg'] !== 'string') continue;
    out.push({ at, host: host.name, msg: rec['msg'], fields: rec });
  }
  return out;
}

/** The earliest entry with this message whose fields include `match`, across all logs given. */
export function firstEntry(entries: LogEntry[], msg: string, match: Record<string, string> = {}): LogEntry | undefined {
  return entries
    .filter((e) => e.msg === msg && Object.entries(match).every(([k, v]) => e.fields[k] === v))
    .sort((a, b) => a.at - b.at)[0];
}
