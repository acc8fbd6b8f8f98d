import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_STATUS } from './error-codes.js';
import { FdError } from './errors.js';

const SRC = resolve(fileURLToPath(import.meta.url), '../../../../src');

function* sources(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (p.endsWith('.ts') && !p.endsWith('.test.ts') && !p.endsWith('error-codes.ts')) yield p;
  }
}

const used = new Map<string, string>();
for (const file of sources(SRC))
  for (const m of readFileSync(file, 'utf8').matchAll(/'(FD_[A-Z0-9_]+)'/g)) used.set(m[1]!, file);

test('every FD_ code in src/ has its place in the error catalog', () => {
  const missing = [...used].filter(([c]) => !(c in ERROR_STATUS)).map(([c, f]) => `${c} (${f})`);
  assert.deepEqual(missing, [], 'add these to src/core/error-codes.ts with their HTTP status');
});

test('the catalog holds no code that nothing uses any more', () => {
  const dead = Object.keys(ERROR_STATUS).filter((c) => !used.has(c));
  assert.deepEqual(dead, []);
});

test("an error's HTTP status comes from the catalog, whatever the place that throws it", () => {
  assert.equal(new FdError('FD_HOST_NOT_FOUND', 'x').status, 404);
  assert.equal(new FdError('FD_VM_RUNNING', 'x').status, 409);
  assert.equal(new FdError('FD_HOST_UNREACHABLE', 'x').status, 503);
  // A status relayed from another API's answer is kept as it was.
  assert.equal(new FdError('FD_VM_RUNNING', 'x', { status: 502 }).status, 502);
});
