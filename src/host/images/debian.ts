/**
 * The tiny image's only inputs from outside the repo: Debian packages, resolved with apt-cache
 * to exact versions (they key the image cache) and fetched with `apt-get download`, which uses
 * the host's configured Debian mirror and verifies what it fetches. Nothing else is downloaded.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';
import { run } from '../../core/process.js';

export interface DebPackage {
  name: string;
  version: string;
}

const APT_HINT = 'run `apt-get update` (the image is built from the Debian archive the host is configured for)';

async function candidateVersion(name: string): Promise<string> {
  const res = await run('apt-cache', ['policy', name], { allowFail: true });
  const m = /^\s*Candidate:\s*(\S+)/m.exec(res.stdout);
  if (!m || m[1] === '(none)')
    throw new FdError('FD_IMAGE_PACKAGE_NOT_FOUND', `Debian package ${name} is not available from apt`, {
      hint: APT_HINT,
    });
  return m[1]!;
}

/**
 * linux-image-cloud-amd64 is a metapackage; the kernel lives in the versioned package it
 * depends on (linux-image-6.1.0-NN-cloud-amd64), whose name changes with every ABI bump.
 */
export async function resolveKernelPackage(meta = 'linux-image-cloud-amd64'): Promise<DebPackage> {
  const metaVersion = await candidateVersion(meta);
  const res = await run('apt-cache', ['show', `${meta}=${metaVersion}`], { allowFail: true });
  const depends = /^Depends:\s*(.+)$/m.exec(res.stdout)?.[1] ?? '';
  const name = depends
    .split(',')
    .map((d) => d.trim().split(/[\s(|]/)[0]!)
    .find((d) => /^linux-image-\d/.test(d));
  if (!name)
    throw new FdError('FD_IMAGE_PACKAGE_NOT_FOUND', `cannot find the kernel package ${meta} depends on`, {
      hint: APT_HINT,
    });
  return { name, version: await candidateVersion(name) };
}

export async function resolvePackage(name: string): Promise<DebPackage> {
  return { name, version: await candidateVersion(name) };
}

/** Downloads the exact versions into `dir` and returns the .deb path of each, in order. */
export async function downloadPackages(pkgs: DebPackage[], dir: string): Promise<string[]> {
  try {
    await run('apt-get', ['download', '-q', ...pkgs.map((p) => `${p.name}=${p.version}`)], {
      cwd: dir,
      timeoutMs: 10 * 60_000,
    });
  } catch (err) {
    throw new FdError('FD_IMAGE_DOWNLOAD_FAILED', `apt-get download of ${pkgs.map((p) => p.name).join(', ')} failed`, {
      hint: APT_HINT,
      cause: err,
    });
  }
  const files = await readdir(dir);
  return pkgs.map((p) => {
    const f = files.find((n) => n.startsWith(`${p.name}_`) && n.endsWith('.deb'));
    if (!f) throw new FdError('FD_IMAGE_DOWNLOAD_FAILED', `apt-get download left no .deb for ${p.name}`);
    return join(dir, f);
  });
}

export async function extractDeb(deb: string, dest: string): Promise<void> {
  await run('dpkg-deb', ['-x', deb, dest]);
}
