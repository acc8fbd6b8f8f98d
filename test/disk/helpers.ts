/** Shared helpers of the disk tests: fixture paths, temp dirs, qemu-img calls, patterns. */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { run } from '../../src/core/process.js';

export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repo root not found');
    dir = up;
  }
  return dir;
}

export function fixture(name: string): string {
  return join(repoRoot(), '..', 'shared', 'fixtures', 'vhd', name);
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-disk-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function qemuImg(...args: string[]): Promise<string> {
  return (await run('qemu-img', args)).stdout;
}

export async function qemuVirtualSize(path: string, format = 'vpc'): Promise<number> {
  const info = JSON.parse(await qemuImg('info', '-f', format, '--output=json', path)) as { 'virtual-size': number };
  return info['virtual-size'];
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Deterministic bytes that differ per sector, so misplaced sectors are caught. */
export function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf;
}
