/**
 * Disks with real filesystems for the scan tests, made with the real tools (sgdisk/sfdisk,
 * mke2fs, mkntfs + ntfs-3g, mkfs.vfat + mtools, mkfs.xfs, LVM's own metadata writer) on loop
 * devices, and the EICAR test file placed at known paths. The LVM logical volume is written by
 * vgcfgrestore (lvcreate needs device-mapper, which these kernels lack); where it lies on the
 * PV comes from `lvs`/`pvs`, not from our parser.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';

export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
const MiB = 1 << 20;

/** A ClamAV database dir with one signature: the EICAR file's MD5 (.hdb: md5:size:name). */
export async function eicarDatabase(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const md5 = createHash('md5').update(EICAR).digest('hex');
  await writeFile(join(dir, 'fd-test.hdb'), `${md5}:${EICAR.length}:FD.Test.EICAR\n`);
  return dir;
}

async function withLoop<T>(
  img: string,
  offsetBytes: number,
  sizeBytes: number,
  fn: (dev: string) => Promise<T>,
): Promise<T> {
  const dev = (
    await run('losetup', ['--find', '--show', '--offset', String(offsetBytes), '--sizelimit', String(sizeBytes), img])
  ).stdout.trim();
  try {
    return await fn(dev);
  } finally {
    await run('losetup', ['-d', dev], { allowFail: true });
  }
}

async function withMount(
  dev: string,
  args: string[],
  fn: (dir: string) => Promise<void>,
  cmd = 'mount',
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-fixmnt-'));
  try {
    await run(cmd, [...args, dev, dir]);
    try {
      await fn(dir);
    } finally {
      await run('umount', [dir]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function tree(root: string, files: Record<string, string>): Promise<void> {
  for (const [p, text] of Object.entries(files)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), text);
  }
}

const EXT_FILES = { '/etc/hostname': 'scanme\n', '/infected/eicar.com': EICAR, '/clean/readme.txt': 'nothing here\n' };

export async function makeExt4(dev: string, files: Record<string, string>, work: string): Promise<void> {
  const t = await mkdtemp(join(work, 'tree-'));
  await tree(t, files);
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', t, dev]);
  await rm(t, { recursive: true, force: true });
}

/** Partition layout of the GPT test disk (1 MiB aligned). */
const GPT = [
  { n: 1, mib: 16, type: '8300' }, // ext4
  { n: 2, mib: 16, type: '0700' }, // NTFS
  { n: 3, mib: 16, type: '0700' }, // FAT
  { n: 4, mib: 24, type: '8e00' }, // LVM PV with LV root (ext4)
  { n: 5, mib: 8, type: '8300' }, // damaged ext4
  { n: 6, mib: 4, type: '8300' }, // random bytes
  { n: 7, mib: 64, type: '8300' }, // XFS
];

export interface GptFixture {
  image: string;
  /** Infected files the scan must find, as `volume:path`. */
  infected: string[];
  lvName: string;
}

export async function makeGptDisk(work: string): Promise<GptFixture> {
  const image = join(work, 'gpt.raw');
  const total = GPT.reduce((s, p) => s + p.mib, 2);
  await run('truncate', ['-s', `${total + 1}M`, image]);
  const args = GPT.flatMap((p) => ['-n', `${p.n}:0:+${p.mib}M`, '-t', `${p.n}:${p.type}`]);
  await run('sgdisk', ['-o', ...args, image]);
  const info = (await run('sgdisk', ['-p', image])).stdout;
  const starts = new Map<number, number>();
  for (const m of info.matchAll(/^\s+(\d+)\s+(\d+)\s+(\d+)/gm)) starts.set(Number(m[1]), Number(m[2]) * 512);
  const at = (n: number) => ({ off: starts.get(n)!, size: GPT[n - 1]!.mib * MiB });

  await withLoop(image, at(1).off, at(1).size, (d) => makeExt4(d, EXT_FILES, work));
  await withLoop(image, at(2).off, at(2).size, async (d) => {
    await run('mkntfs', ['-q', '-F', '-Q', d]);
    await withMount(
      d,
      [],
      (dir) => tree(dir, { '/Windows/System32/eicar.com': EICAR, '/Users/a/notes.txt': 'hi\n' }),
      'ntfs-3g',
    );
  });
  await withLoop(image, at(3).off, at(3).size, async (d) => {
    await run('mkfs.vfat', [d]);
    await writeFile(join(work, 'eicar.com'), EICAR);
    await run('mmd', ['-i', d, '::/DOCS']);
    await run('mcopy', ['-i', d, join(work, 'eicar.com'), '::/DOCS/EICAR.COM']);
  });
  const vg = `fdscan${randomBytes(3).toString('hex')}`;
  await withLoop(image, at(4).off, at(4).size, async (d) => {
    const env = { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1' };
    const lvm = (cmd: string, a: string[]) => run(cmd, ['--devices', d, ...a], { env });
    await lvm('pvcreate', ['-ff', '-y', d]);
    await lvm('vgcreate', ['-s', '1M', vg, d]);
    const backup = join(work, 'vg.txt');
    await lvm('vgcfgbackup', ['-f', backup, vg]);
    const text = await readFile(backup, 'utf8');
    const lv = `\tlogical_volumes {\n\t\troot {\n\t\t\tid = "fdfdfd-0000-0000-0000-0000-0000-000001"\n\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = 12\n\t\t\t\ttype = "striped"\n\t\t\t\tstripe_count = 1\n\t\t\t\tstripes = [\n\t\t\t\t\t"pv0", 3\n\t\t\t\t]\n\t\t\t}\n\t\t}\n\t}\n`;
    const end = text.lastIndexOf('\n}');
    await writeFile(backup, text.slice(0, end) + '\n' + lv + text.slice(end));
    await run('vgcfgrestore', ['--devices', d, '-f', backup, vg], { env, allowFail: true });
    const pe = (await lvm('lvs', ['--noheadings', '-o', 'seg_pe_ranges', `${vg}/root`])).stdout.trim();
    const first = Number(/:(\d+)-/.exec(pe)![1]);
    const peStart = Number(
      (await lvm('pvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'pe_start', d])).stdout.trim(),
    );
    await withLoop(image, at(4).off + peStart + first * MiB, 12 * MiB, (lvDev) =>
      makeExt4(lvDev, { '/lvfile/eicar.com': EICAR, '/lvfile/ok.txt': 'fine\n' }, work),
    );
  });
  await withLoop(image, at(5).off, at(5).size, async (d) => {
    await makeExt4(d, EXT_FILES, work);
  });
  // damage: the group descriptors and inode tables go, the superblock magic stays
  const fh = await import('node:fs/promises').then((m) => m.open(image, 'r+'));
  try {
    await fh.write(Buffer.alloc(2 * MiB, 0xa5), 0, 2 * MiB, at(5).off + 4096);
    await fh.write(randomBytes(at(6).size), 0, at(6).size, at(6).off);
  } finally {
    await fh.close();
  }
  await withLoop(image, at(7).off, at(7).size, async (d) => {
    await run('mkfs.xfs', ['-q', '-f', d], { env: { ...process.env, TEST_DIR: '1', TEST_DEV: '1', QA_CHECK_FS: '1' } });
    await withMount(d, ['-t', 'xfs'], (dir) => tree(dir, { '/var/lib/eicar.com': EICAR, '/var/lib/ok': 'ok\n' }));
  });
  return {
    image,
    infected: [
      'p1:/infected/eicar.com',
      'p2:/Windows/System32/eicar.com',
      'p3:/DOCS/EICAR.COM',
      `p4/${vg}/root:/lvfile/eicar.com`,
      'p7:/var/lib/eicar.com',
    ],
    lvName: `p4/${vg}/root`,
  };
}

/** An MBR disk: partition 1 FAT, partition 2 ext4. */
export async function makeMbrDisk(work: string): Promise<{ image: string; infected: string[] }> {
  const image = join(work, 'mbr.raw');
  await run('truncate', ['-s', '40M', image]);
  await run('sfdisk', ['-q', image], { input: 'label: dos\n,16M,c\n,20M,83\n' });
  await withLoop(image, MiB, 16 * MiB, async (d) => {
    await run('mkfs.vfat', [d]);
    await writeFile(join(work, 'eicar.com'), EICAR);
    await run('mcopy', ['-i', d, join(work, 'eicar.com'), '::/EICAR.COM']);
  });
  await withLoop(image, 17 * MiB, 20 * MiB, (d) => makeExt4(d, { '/home/u/eicar.com': EICAR }, work));
  return { image, infected: ['p1:/EICAR.COM', 'p2:/home/u/eicar.com'] };
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}
