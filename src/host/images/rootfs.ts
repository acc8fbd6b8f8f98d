/**
 * The tiny guest's root filesystem: ext4 made by `mke2fs -d` straight from a directory (no loop
 * mount, no root needed for the fs itself), reproducibly. mke2fs takes a fixed UUID and hash
 * seed from us and E2FSPROGS_FAKE_TIME for the times it makes up, but copies atime and ctime of
 * the source files, which the host sets as it pleases; those are reset with debugfs afterwards.
 */
import { lstat, readdir, lutimes, open, unlink, writeFile } from 'node:fs/promises';
import { FdError } from '../../core/errors.js';
import { join } from 'node:path';
import { run } from '../../core/process.js';

export interface Ext4Options {
  /** Raw disk image to create (whole disk; the filesystem takes its first fsBytes). */
  path: string;
  tree: string;
  diskBytes: number;
  fsBytes: number;
  label: string;
  uuid: string;
  hashSeed: string;
  epochS: number;
}

const BLOCK = 4096;

/** Every path under `root` ("/", "/bin", "/bin/sh", ...), parents first. */
async function treePaths(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(root, rel))).sort()) {
    const r = `${rel}/${name}`;
    out.push(r);
    if ((await lstat(join(root, r))).isDirectory()) out.push(...(await treePaths(root, r)));
  }
  return out;
}

/** Sets every mtime and atime in the tree to the epoch (symlinks themselves, not targets). */
export async function pinTreeTimes(root: string, epochS: number): Promise<void> {
  for (const p of ['', ...(await treePaths(root))].reverse()) await lutimes(join(root, p), epochS, epochS);
}

export async function makeExt4(o: Ext4Options): Promise<void> {
  await pinTreeTimes(o.tree, o.epochS);
  const fh = await open(o.path, 'wx');
  await fh.truncate(o.diskBytes);
  await fh.close();
  const env = { ...process.env, E2FSPROGS_FAKE_TIME: String(o.epochS), SOURCE_DATE_EPOCH: String(o.epochS) };
  // MKE2FS_CONFIG points at nothing so the host's /etc/mke2fs.conf cannot change the result:
  // every feature that matters is spelled out here.
  await run(
    'mke2fs',
    [
      '-q',
      '-F',
      '-t',
      'ext4',
      '-b',
      String(BLOCK),
      '-I',
      '256',
      '-N',
      '2048',
      '-m',
      '0',
      '-O',
      'has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize',
      '-J',
      'size=4',
      '-L',
      o.label,
      '-U',
      o.uuid,
      '-E',
      `hash_seed=${o.hashSeed},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard`,
      '-d',
      o.tree,
      o.path,
      String(o.fsBytes / BLOCK),
    ],
    { env: { ...env, MKE2FS_CONFIG: '/dev/null' } },
  );
  const paths = ['/', '/lost+found', ...(await treePaths(o.tree))];
  const cmds = paths.flatMap((p) => [`sif "${p}" atime @${o.epochS}`, `sif "${p}" ctime @${o.epochS}`]);
  const cmdFile = `${o.path}.debugfs`;
  await writeFile(cmdFile, cmds.join('\n') + '\n');
  const res = await run('debugfs', ['-w', '-f', cmdFile, o.path], { env });
  await unlink(cmdFile);
  // debugfs exits 0 even when a command fails; it echoes each command and reports failures.
  const failed = (res.stdout + res.stderr).split('\n').filter((l) => l.trim() && !l.startsWith('debugfs'));
  if (failed.length) throw new FdError('FD_IMAGE_BUILD_FAILED', `debugfs could not pin times: ${failed[0]}`);
  // e2fsck -n exits non-zero on any inconsistency: a broken image never reaches the cache.
  await run('e2fsck', ['-f', '-n', o.path]);
}
