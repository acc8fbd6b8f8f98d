#!/usr/bin/env node
// The layer rule from design.md: a layer imports only the layers above it in this list.
// Runs in CI (npm run lint); prints every offending import and exits 1.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';

const LAYERS = ['core', 'disk', 'ovf', 'qemu', 'host', 'cluster', 'api', 'cli'];
const root = resolve(dirname(new URL(import.meta.url).pathname), '..');
const src = join(root, 'src');

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const layerOf = (file) => relative(src, file).split(sep)[0];
let bad = 0;
for (const file of walk(src)) {
  const from = layerOf(file);
  const fromIdx = LAYERS.indexOf(from);
  if (fromIdx < 0) {
    console.error(`${relative(root, file)}: folder src/${from} is not a layer (${LAYERS.join(', ')})`);
    bad++;
    continue;
  }
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)) {
    const target = resolve(dirname(file), m[1]);
    if (!target.startsWith(src + sep)) continue;
    const to = layerOf(target);
    const toIdx = LAYERS.indexOf(to);
    if (toIdx > fromIdx) {
      console.error(`${relative(root, file)}: src/${from} must not import src/${to} (${m[1]})`);
      bad++;
    }
  }
}
if (bad) {
  console.error(`layer check: ${bad} problem(s)`);
  process.exit(1);
}
console.log('layer check: ok');
