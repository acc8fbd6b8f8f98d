/**
 * ClamAV's command-line scanner over a list of files: `clamscan --file-list`, one process per
 * scan (the signature database loads once), its per-file lines read as they come for progress.
 * The database is the directory the user keeps fresh with their own freshclam (or a small one
 * of their own: .hdb/.hsb hashes, .ndb patterns); flightdeck never downloads signatures.
 */
import { spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { FdError, isErrno } from '../../core/errors.js';
import { run, tail } from '../../core/process.js';

export interface Infection {
  file: string;
  signature: string;
}

export interface ClamResult {
  infected: Infection[];
  errors: Array<{ file: string; message: string }>;
  scanned: number;
}

const DB_EXT =
  /\.(cvd|cld|hdb|hsb|hdu|hsu|mdb|msb|ndb|ndu|ldb|ldu|cdb|ign2|fp|sfp|pdb|wdb|yar|yara|cbc|crb|idb|ftm|info|cat|cfg)$/;

/** Refuses a database directory with no signature files in it (clamscan would load nothing). */
export async function checkDatabase(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR'))
      throw new FdError('FD_SCAN_NO_DATABASE', `ClamAV database directory ${dir} does not exist`, {
        hint: 'point --database at the directory your freshclam keeps (often /var/lib/clamav)',
      });
    throw err;
  }
  if (!names.some((n) => DB_EXT.test(n)))
    throw new FdError('FD_SCAN_NO_DATABASE', `no ClamAV signatures in ${dir}`, {
      hint: 'run freshclam, or put your own .hdb/.ndb signature files there',
    });
}

export async function clamVersion(): Promise<string> {
  return (await run('clamscan', ['--version'])).stdout.trim();
}

export async function clamscan(o: {
  files: string[];
  databaseDir: string;
  listFile: string;
  onFile?: (scanned: number) => void;
  signal?: AbortSignal;
}): Promise<ClamResult> {
  await checkDatabase(o.databaseDir);
  const res: ClamResult = { infected: [], errors: [], scanned: 0 };
  if (!o.files.length) return res;
  // a name with a newline cannot go into the list: report it rather than scan the wrong file
  const listed = o.files.filter((f) => !f.includes('\n'));
  for (const f of o.files.filter((x) => x.includes('\n')))
    res.errors.push({ file: f, message: 'name holds a newline' });
  await writeFile(o.listFile, listed.join('\n') + '\n');
  const child = spawn(
    'clamscan',
    [`--database=${o.databaseDir}`, `--file-list=${o.listFile}`, '--no-summary', '--stdout'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: o.signal,
    },
  );
  let stderr = '';
  let buf = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const at = line.lastIndexOf(': ');
      if (at < 0) continue;
      const file = line.slice(0, at);
      const what = line.slice(at + 2);
      if (what === 'OK') res.scanned++;
      else if (what.endsWith(' FOUND')) {
        res.scanned++;
        res.infected.push({ file, signature: what.slice(0, -' FOUND'.length) });
      } else if (what.endsWith(' ERROR')) res.errors.push({ file, message: what.slice(0, -' ERROR'.length) });
      else continue;
      o.onFile?.(res.scanned + res.errors.length);
    }
  });
  const code = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c ?? 2));
  });
  // 0 clean, 1 found something; 2 is an error, fatal only when nothing was scanned
  if (code > 1 && res.scanned === 0)
    throw new FdError('FD_SCAN_ENGINE_FAILED', `clamscan failed (exit ${code}): ${tail(stderr, 4)}`);
  return res;
}
