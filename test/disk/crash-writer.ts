/**
 * Child process of the crash test: writes the planned generations through the engine and
 * prints "done G" after each write returns, until it is killed. Usage: PATH SEED GENS.
 */
import { VhdImage } from '../../src/disk/vhd/image.js';
import { plan, stamps } from './crash-plan.js';

const [path, seed, gens] = process.argv.slice(2);
const img = await VhdImage.open(path!, { write: true });
const writes = plan(Number(seed), Number(gens), img.sizeBytes / 512);
process.stdout.write('ready\n');
for (const w of writes) {
  await img.write(w.sector * 512, stamps(w));
  if (w.gen % 7 === 0) await img.flush();
  // Pipes to the parent are synchronous on Linux: the line is out before the next write starts.
  process.stdout.write(`done ${w.gen}\n`);
}
await img.close();
