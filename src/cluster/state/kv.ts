/**
 * The key-value store the desired state lives in, as the cluster code sees it: JSON values
 * under string keys, each with the revision of its last change, compare-and-swap on that
 * revision, multi-key transactions, and watches. etcd implements it (store.ts); an in-memory
 * twin (memory-store.ts) lets the cluster's logic be tested in milliseconds, and a test runs
 * the same checks against both so the twin stays faithful.
 */

export interface Versioned<T> {
  key: string;
  value: T;
  /** Revision of the key's last change: pass back to update/remove/txn for compare-and-swap. */
  rev: string;
}

export type StoreEvent<T> =
  { type: 'put'; key: string; value: T; rev: string } | { type: 'delete'; key: string; rev: string };

export interface TxnOps {
  /** Every expectation must hold: the key at that revision, or absent for rev '0'. */
  expect: { key: string; rev: string }[];
  put?: { key: string; value: unknown }[];
  del?: string[];
}

/** Every key under a prefix as of one revision. */
export interface Snapshot {
  rev: string;
  kvs: Versioned<unknown>[];
}

export interface KvStore {
  get<T>(key: string): Promise<Versioned<T> | undefined>;
  /** Every key under `prefix`, in key order (read in pages: no answer outgrows a message). */
  list<T>(prefix: string): Promise<Versioned<T>[]>;
  count(prefix: string): Promise<number>;
  /** Creates the key only if it does not exist: the new revision, or undefined when it exists. */
  create<T>(key: string, value: T, opts?: { lease?: string }): Promise<string | undefined>;
  /** Replaces the value only while the key is at `rev`: the new revision, or undefined. */
  update<T>(key: string, value: T, rev: string): Promise<string | undefined>;
  /** Unconditional write, for data with a single writer (a host's own status); the new revision. */
  put<T>(key: string, value: T, opts?: { lease?: string }): Promise<string>;
  /** Removes the key (only while at `rev`, when given): the revision after, or undefined when `rev` did not match. */
  remove(key: string, rev?: string): Promise<string | undefined>;
  /** Several keys changed atomically: the new revision, or undefined (nothing changed) when an expectation failed. */
  txn(ops: TxnOps): Promise<string | undefined>;
  /**
   * Read-modify-write with retry on conflict. `fn` returns the new value, or undefined to leave
   * the record alone; it may throw an FdError to refuse the change.
   */
  mutate<T>(key: string, fn: (current: T) => T | undefined, attempts?: number): Promise<Versioned<T>>;
  /** Every key under `prefix` and the revision they are as of (read in pages at that revision). */
  snapshot(prefix: string): Promise<Snapshot>;
  /**
   * Calls `onEvent` for every change under `prefix` (after `fromRev` when given, so a snapshot
   * and its watch miss nothing) until the returned function is called. `onLost` is called when
   * the watch cannot go on (its revision was compacted away): the caller reads a new snapshot.
   */
  watch<T>(
    prefix: string,
    onEvent: (e: StoreEvent<T>) => void,
    opts?: { fromRev?: string; onLost?: (err: Error) => void },
  ): Promise<() => Promise<void>>;
  close(): void;
}

/** Waits a little longer after each conflict of a compare-and-swap loop. */
export const conflictBackoff = (attempt: number): Promise<void> =>
  new Promise((r) => setTimeout(r, Math.random() * 5 * (attempt + 1)));
