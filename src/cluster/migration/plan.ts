/**
 * What a live migration is asked to do and what it reports: the tunables a user can set, what
 * the target prepared for the source, and the result a task returns.
 */

export interface MigrationTunables {
  /** Bytes per second for memory; 0 = unlimited. */
  bandwidthBytesPerS: number;
  downtimeLimitMs: number;
  autoConverge: boolean;
  xbzrle: boolean;
  multifd: boolean;
  postcopy: boolean;
  /** Give up when neither disk nor memory bytes advance for this long (a cut link stalls silently). */
  stallTimeoutMs: number;
}

export const DEFAULT_TUNABLES: MigrationTunables = {
  bandwidthBytesPerS: 0,
  downtimeLimitMs: 300,
  autoConverge: true,
  xbzrle: false,
  multifd: false,
  postcopy: false,
  // Long enough that a loaded machine (QEMU starved for seconds) is not taken for a cut link.
  stallTimeoutMs: 30_000,
};

/** A disk as the target needs to know it: its size and the base image its top layer sits on. */
export interface DiskPlan {
  id: string;
  sizeBytes: number;
  baseImage: string | null;
}

export interface PreparedTarget {
  /** Where the target's QEMU serves the new disks over NBD. */
  nbd: { host: string; port: number };
  /** Per disk id: export name and whether only the top layer needs copying. */
  disks: { id: string; exportName: string; sync: 'top' | 'full' }[];
  migrateUri: string;
}

export interface MigrationResult {
  from: string;
  to: string;
  totalTimeMs: number;
  /** QEMU's own measure of the pause. */
  downtimeMs: number;
  ramBytes: number;
  diskBytes: number;
  setupTimeMs: number;
}
