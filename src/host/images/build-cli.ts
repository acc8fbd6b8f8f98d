/**
 * Prebuilds the tiny guest image outside the CLI, for setup scripts and CI:
 *   node dist/src/host/images/build-cli.js [--force] [--cache-dir DIR] [--json]
 * Prints where the artifacts are (JSON with --json) and exits non-zero with the error's code
 * and hint when the build fails.
 */
import { isFdError } from '../../core/errors.js';
import { buildTinyImage } from './tiny.js';

async function main(argv: string[]): Promise<number> {
  let force = false;
  let json = false;
  let cacheDir: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--force') force = true;
    else if (a === '--json') json = true;
    else if (a === '--cache-dir' && argv[i + 1]) cacheDir = argv[++i];
    else {
      process.stderr.write(`usage: build-cli.js [--force] [--cache-dir DIR] [--json]\n`);
      return 2;
    }
  }
  const image = await buildTinyImage({
    force,
    ...(cacheDir ? { cacheDir } : {}),
    onProgress: json ? undefined : (p) => process.stderr.write(`[${p.done}/${p.total}] ${p.message ?? ''}\n`),
  });
  if (json) process.stdout.write(JSON.stringify(image, null, 2) + '\n');
  else
    process.stdout.write(
      [
        `tiny image ${image.key} (${image.built ? 'built' : 'cached'})`,
        `  kernel:  ${image.kernel}`,
        `  initrd:  ${image.initrd}`,
        `  disk:    ${image.disk}`,
        `  cmdline: ${image.cmdline}`,
      ].join('\n') + '\n',
    );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (isFdError(err)) {
      process.stderr.write(`error: ${err.message}\n${err.hint ? `hint: ${err.hint}\n` : ''}(${err.code})\n`);
      process.exit(1);
    }
    throw err;
  },
);
