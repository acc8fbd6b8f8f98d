/**
 * Mounting a view's volumes read-only on this host, each on its own loop device over the view's
 * FUSE file: ext2/3/4 and XFS by the kernel, NTFS by ntfs-3g, FAT by fusefat (these kernels have
 * no vfat). Loops are writable so a journal replay can land in the view's overlay; the
 * filesystems are mounted ro, nosuid, nodev, noexec. A volume that does not mount gets its
 * error; the others go on.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import { run, tail } from '../../core/process.js';
import { saveView, type ViewState } from './view.js';
import type { Volume } from './volumes.js';

export interface MountedVolume {
  volume: Volume;
  dir: string;
}

const MOUNTABLE = new Set(['ext', 'xfs', 'ntfs', 'fat']);

/** Mounts every readable volume; volumes that fail get `error` set (and are not returned). */
export async function mountVolumes(v: ViewState, volumes: Volume[]): Promise<MountedVolume[]> {
  const out: MountedVolume[] = [];
  for (const vol of volumes) {
    if (vol.error) continue;
    if (!MOUNTABLE.has(vol.fsType)) {
      if (vol.fsType !== 'swap')
        vol.error = { code: 'FD_SCAN_UNKNOWN_FS', message: `${vol.name}: no filesystem to scan (${vol.fsType})` };
      continue;
    }
    try {
      out.push({ volume: vol, dir: await mountOne(v, vol) });
    } catch (err) {
      if (!(err instanceof FdError)) throw err;
      vol.error = { code: err.code, message: err.message };
    }
  }
  return out;
}

async function mountOne(v: ViewState, vol: Volume): Promise<string> {
  const loop = (
    await run('losetup', [
      '--find',
      '--show',
      '--offset',
      String(vol.offsetBytes),
      '--sizelimit',
      String(vol.sizeBytes),
      v.fuseFile,
    ])
  ).stdout.trim();
  v.loops.push(loop);
  await saveView(v);
  const dir = join(v.dir, 'mnt', vol.name.replaceAll('/', '_'));
  await mkdir(dir, { recursive: true });
  const opts = 'ro,nosuid,nodev,noexec';
  const [cmd, args] =
    vol.fsType === 'ntfs'
      ? ['ntfs-3g', ['-o', opts, loop, dir]]
      : vol.fsType === 'fat'
        ? ['fusefat', ['-o', 'ro', loop, dir]]
        : [
            'mount',
            [
              '-t',
              vol.fsType === 'xfs' ? 'xfs' : 'ext4',
              '-o',
              vol.fsType === 'xfs' ? `${opts},nouuid` : opts,
              loop,
              dir,
            ],
          ];
  // recorded before the call: a scan killed while mounting still gets unmounted
  v.mounts.push(dir);
  await saveView(v);
  const r = await run(cmd, args, { allowFail: true, timeoutMs: 120_000 });
  if (r.code !== 0) {
    v.mounts = v.mounts.filter((m) => m !== dir);
    await run('losetup', ['-d', loop], { allowFail: true });
    v.loops = v.loops.filter((l) => l !== loop);
    await saveView(v);
    throw new FdError(
      'FD_SCAN_MOUNT_FAILED',
      `${vol.name}: the ${vol.fsType} filesystem did not mount: ${tail(r.stderr || r.stdout, 3)}`,
      {
        hint: 'the filesystem may be damaged; the other volumes were still scanned',
      },
    );
  }
  return dir;
}
