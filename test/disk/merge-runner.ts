/** Child process of the merge crash test: merges CHILD into its parent. */
import { mergeVhd } from '../../src/disk/vhd/merge.js';

process.stdout.write('ready\n');
await mergeVhd(process.argv[2]!);
process.stdout.write('merged\n');
