/**
 * Values read from the store are checked against their schema, once per version: a record
 * written by an older daemon gets its defaults filled in, and one that does not fit at all is
 * a clear error naming its key instead of a crash somewhere far from the read.
 */
import type { z } from 'zod';
import { FdError } from '../../core/errors.js';
import type { Versioned } from './kv.js';

const memo = new WeakMap<object, unknown>();

export function parsed<S extends z.ZodType>(kv: Versioned<unknown>, schema: S): Versioned<z.output<S>> {
  const hit = memo.get(kv);
  if (hit !== undefined) return hit as Versioned<z.output<S>>;
  const r = schema.safeParse(kv.value);
  if (!r.success)
    throw new FdError('FD_STORE_BAD_RECORD', `record ${kv.key} does not have the shape it must have`, {
      hint: 'it was written by another version or by hand; fix or delete it with etcdctl',
      details: r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`),
    });
  const out = { key: kv.key, value: r.data, rev: kv.rev };
  memo.set(kv, out);
  return out;
}

/** Every record of a list that fits its schema; the rest are reported once each and left out. */
export function parsedAll<S extends z.ZodType>(
  kvs: Versioned<unknown>[],
  schema: S,
  onBad: (key: string, err: FdError) => void,
): Versioned<z.output<S>>[] {
  const out: Versioned<z.output<S>>[] = [];
  for (const kv of kvs) {
    try {
      out.push(parsed(kv, schema));
    } catch (err) {
      if (!(err instanceof FdError)) throw err;
      if (!reported.has(kv)) {
        reported.add(kv);
        onBad(kv.key, err);
      }
    }
  }
  return out;
}

const reported = new WeakSet<object>();
