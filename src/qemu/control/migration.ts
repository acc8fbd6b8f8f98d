/**
 * QEMU's live migration of memory and device state, both ends: capabilities and parameters,
 * start and cancel on the source, listening on the target, progress, and the end of a
 * migration awaited on QEMU's MIGRATION event (never polled: the guest is paused around the
 * end, so every millisecond between QEMU finishing and us noticing is downtime).
 */
import type { QmpChannel, QmpEvent } from '../qmp.js';

export type MigrationStatus =
  | 'none'
  | 'setup'
  | 'cancelling'
  | 'cancelled'
  | 'active'
  | 'postcopy-active'
  | 'postcopy-paused'
  | 'postcopy-recover'
  | 'completed'
  | 'failed'
  | 'colo'
  | 'pre-switchover'
  | 'device'
  | 'wait-unplug';

export const FINAL_STATUSES: readonly MigrationStatus[] = ['completed', 'failed', 'cancelled'];
export const isFinal = (s: MigrationStatus): boolean => FINAL_STATUSES.includes(s);

export interface MigrationRam {
  transferred: number;
  remaining: number;
  total: number;
  /** Pages the guest dirties per second, and their size. */
  dirtyPagesRate: number;
  pageSize: number;
  mbps: number;
}

export interface MigrationInfo {
  status: MigrationStatus;
  totalTimeMs?: number;
  /** QEMU's own measure of the pause at the switch-over. */
  downtimeMs?: number;
  expectedDowntimeMs?: number;
  setupTimeMs?: number;
  error?: string;
  ram?: MigrationRam;
}

export interface MigrationCapabilities {
  autoConverge?: boolean;
  xbzrle?: boolean;
  multifd?: boolean;
  postcopy?: boolean;
  /** MIGRATION events on every status change: what waitFinal listens to. */
  events?: boolean;
}

const CAPABILITY_NAMES: Record<keyof MigrationCapabilities, string> = {
  autoConverge: 'auto-converge',
  xbzrle: 'xbzrle',
  multifd: 'multifd',
  postcopy: 'postcopy-ram',
  events: 'events',
};

interface RawQueryMigrate {
  status?: MigrationStatus;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    'dirty-pages-rate': number;
    'page-size': number;
    mbps: number;
  };
}

/** "Unlimited" bandwidth: QEMU's default cap is 128 MiB/s. */
const UNLIMITED_BYTES_PER_S = 100 * 1024 ** 3;

export class Migration {
  constructor(private readonly q: QmpChannel) {}

  async setCapabilities(caps: MigrationCapabilities): Promise<void> {
    const capabilities = (Object.keys(caps) as (keyof MigrationCapabilities)[]).map((k) => ({
      capability: CAPABILITY_NAMES[k],
      state: caps[k] === true,
    }));
    await this.q.execute('migrate-set-capabilities', { capabilities });
  }

  /** 0 or undefined bandwidth means as fast as the link goes. */
  async setParameters(p: { downtimeLimitMs: number; maxBandwidthBytesPerS?: number }): Promise<void> {
    await this.q.execute('migrate-set-parameters', {
      'downtime-limit': p.downtimeLimitMs,
      'max-bandwidth':
        p.maxBandwidthBytesPerS && p.maxBandwidthBytesPerS > 0 ? p.maxBandwidthBytesPerS : UNLIMITED_BYTES_PER_S,
    });
  }

  /** Source: starts sending to a target listening on `uri` (tcp:HOST:PORT). */
  async start(uri: string): Promise<void> {
    await this.q.execute('migrate', { uri });
  }

  async startPostcopy(): Promise<void> {
    await this.q.execute('migrate-start-postcopy');
  }

  async cancel(): Promise<void> {
    await this.q.execute('migrate_cancel');
  }

  /** Target (started with -incoming defer): listens on `uri` for the source. */
  async listen(uri: string): Promise<void> {
    await this.q.execute('migrate-incoming', { uri });
  }

  async query(): Promise<MigrationInfo> {
    const r = await this.q.execute<RawQueryMigrate>('query-migrate');
    return {
      status: r.status ?? 'none',
      ...(r['total-time'] !== undefined ? { totalTimeMs: r['total-time'] } : {}),
      ...(r.downtime !== undefined ? { downtimeMs: r.downtime } : {}),
      ...(r['expected-downtime'] !== undefined ? { expectedDowntimeMs: r['expected-downtime'] } : {}),
      ...(r['setup-time'] !== undefined ? { setupTimeMs: r['setup-time'] } : {}),
      ...(r['error-desc'] !== undefined ? { error: r['error-desc'] } : {}),
      ...(r.ram
        ? {
            ram: {
              transferred: r.ram.transferred,
              remaining: r.ram.remaining,
              total: r.ram.total,
              dirtyPagesRate: r.ram['dirty-pages-rate'],
              pageSize: r.ram['page-size'] || 4096,
              mbps: r.ram.mbps,
            },
          }
        : {}),
    };
  }

  /** Calls `fn` on every status change (needs the events capability); returns the unsubscribe. */
  onStatus(fn: (status: MigrationStatus) => void): () => void {
    const on = (ev: QmpEvent): void => fn(String(ev.data['status']) as MigrationStatus);
    this.q.on('MIGRATION', on);
    return () => this.q.off('MIGRATION', on);
  }

  /**
   * Resolves with the migration's info once it is completed, failed or cancelled, or with its
   * info at the timeout. The listener is set before the first query, so an end between the two
   * is not missed. Needs the events capability on this end.
   */
  async waitFinal(timeoutMs: number): Promise<MigrationInfo> {
    let wake: (() => void) | undefined;
    let ended = false;
    const off = this.onStatus((s) => {
      if (isFinal(s)) {
        ended = true;
        wake?.();
      }
    });
    try {
      const now = await this.query();
      if (isFinal(now.status)) return now;
      if (!ended)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, timeoutMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      return await this.query();
    } finally {
      off();
    }
  }
}
