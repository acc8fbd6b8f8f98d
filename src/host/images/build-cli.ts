/**
 * Prebuilds the tiny guest image outside the CLI, for setup scripts and CI:
 *   node dist/src/host/images/build-cli.js [--force] [--cache-dir DIR] [--json]
 *     [--boot-check [--runs N] [--machine q35|pc]]
 * Prints where the artifacts are (JSON with --json) and exits non-zero with the error's code
 * and hint when the build fails. --boot-check then boots the image under TCG and prints the
 * time to the first heartbeat and to FD-READY (median of N runs).
 */
import { isFdError } from '../../core/errors.js';
import { bootCheck, type BootCheckResult } from './boot-check.js';
import { buildTinyImage } from './tiny.js';

async function main(argv: string[]): Promise<number> {
  let force = false;
  let json = false;
  let cacheDir: string | undefined;
  let check = false;
  let runs = 1;
  let machine: 'q35' | 'pc' = 'q35';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--force') force = true;
    else if (a === '--boot-check') check = true;
    else if (a === '--runs' && Number(argv[i + 1]) >= 1) runs = Number(argv[++i]);
    else if (a === '--machine' && (argv[i + 1] === 'pc' || argv[i + 1] === 'q35')) machine = argv[++i] as 'pc' | 'q35';
    else if (a === '--json') json = true;
    else if (a === '--cache-dir' && argv[i + 1]) cacheDir = argv[++i];
    else {
      process.stderr.write(
        'usage: build-cli.js [--force] [--cache-dir DIR] [--json] [--boot-check [--runs N] [--machine q35|pc]]\n',
      );
      return 2;
    }
  }
  const image = await buildTinyImage({
    force,
    ...(cacheDir ? { cacheDir } : {}),
    onProgress: json ? undefined : (p) => process.stderr.write(`[${p.done}/${p.total}] ${p.message ?? ''}\n`),
  });
  const boots: BootCheckResult[] = [];
  for (let i = 0; check && i < runs; i++) {
    boots.push(await bootCheck(image, { machine }));
    if (!json) process.stderr.write(`boot ${i + 1}/${runs}: ${JSON.stringify(boots.at(-1))}\n`);
  }
  const median = (f: (b: BootCheckResult) => number): number =>
    boots.map(f).sort((x, y) => x - y)[Math.floor(boots.length / 2)]!;
  const bootSummary = check
    ? {
        machine,
        runs,
        firstHeartbeatMs: median((b) => b.firstHeartbeatMs),
        readyMs: median((b) => b.readyMs),
        guestFirstHeartbeatS: median((b) => b.guestFirstHeartbeatS),
        guestReadyUptimeS: median((b) => b.guestReadyUptimeS),
        qemuCpuMsAtFirstHeartbeat: median((b) => b.qemuCpuMsAtFirstHeartbeat),
      }
    : undefined;
  if (json)
    process.stdout.write(JSON.stringify({ ...image, ...(bootSummary ? { boot: bootSummary } : {}) }, null, 2) + '\n');
  else
    process.stdout.write(
      [
        `tiny image ${image.key} (${image.built ? 'built' : 'cached'})`,
        `  kernel:  ${image.kernel}`,
        `  initrd:  ${image.initrd}`,
        `  disk:    ${image.disk}`,
        `  cmdline: ${image.cmdline}`,
        ...(bootSummary
          ? [
              `boot (${machine}, TCG, median of ${runs}): first heartbeat ${bootSummary.firstHeartbeatMs} ms, ` +
                `FD-READY ${bootSummary.readyMs} ms after QEMU start; guest clock at first heartbeat ` +
                `${bootSummary.guestFirstHeartbeatS} s, at FD-READY ${bootSummary.guestReadyUptimeS} s; ` +
                `QEMU CPU time at first heartbeat ${bootSummary.qemuCpuMsAtFirstHeartbeat} ms`,
            ]
          : []),
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
