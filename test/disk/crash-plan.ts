/**
 * The writes a crash-test writer makes, derived from a seed so the test can replay them:
 * generation g writes `count` sectors at `sector`, each stamped with (sector, g) so any byte
 * that is neither old nor new (torn, misplaced, garbage) is caught.
 */
export interface PlannedWrite {
  gen: number;
  sector: number;
  count: number;
}

export function plan(seed: number, gens: number, sectors: number): PlannedWrite[] {
  let x = seed >>> 0 || 1;
  const rnd = (n: number): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
  const out: PlannedWrite[] = [];
  for (let g = 1; g <= gens; g++) {
    // Mostly small writes, some spanning several blocks.
    const count = rnd(10) < 8 ? 1 + rnd(16) : 1 + rnd(2048);
    const sector = rnd(Math.max(1, sectors - count));
    out.push({ gen: g, sector, count: Math.min(count, sectors - sector) });
  }
  return out;
}

export function stamp(sector: number, gen: number): Buffer {
  const buf = Buffer.alloc(512);
  buf.writeUInt32LE(sector, 0);
  buf.writeUInt32LE(gen, 4);
  let x = (sector * 2654435761 + gen * 40503) >>> 0 || 1;
  for (let i = 8; i < 512; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf;
}

export function stamps(w: PlannedWrite): Buffer {
  return Buffer.concat(Array.from({ length: w.count }, (_, i) => stamp(w.sector + i, w.gen)));
}
