/**
 * The cloud-init NoCloud seed of a VM: user-data and meta-data on an ISO labelled "cidata",
 * which every cloud image reads at first boot.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../core/process.js';

export interface CloudInitFields {
  user?: string;
  sshKey?: string;
  hostname?: string;
  password?: string;
  userData?: string;
}

/** The #cloud-config a set of fields stands for (or the user's own user-data as given). */
export function userDataOf(vmName: string, ci: CloudInitFields): string {
  if (ci.userData) return ci.userData;
  const hostname = ci.hostname ?? vmName;
  return [
    '#cloud-config',
    `hostname: ${hostname}`,
    ...(ci.user
      ? [
          'users:',
          `  - name: ${ci.user}`,
          '    sudo: ALL=(ALL) NOPASSWD:ALL',
          '    shell: /bin/bash',
          ...(ci.sshKey ? ['    ssh_authorized_keys:', `      - ${ci.sshKey}`] : []),
        ]
      : ci.sshKey
        ? ['ssh_authorized_keys:', `  - ${ci.sshKey}`]
        : []),
    ...(ci.password ? [`password: ${ci.password}`, 'chpasswd: { expire: false }', 'ssh_pwauth: true'] : []),
    '',
  ].join('\n');
}

/** Writes DIR/seed.iso for the VM and returns its path. */
export async function buildSeedIso(dir: string, vmName: string, ci: CloudInitFields): Promise<string> {
  const src = await mkdtemp(join(dir, 'seed-'));
  try {
    const hostname = ci.hostname ?? vmName;
    await writeFile(join(src, 'user-data'), userDataOf(vmName, ci), { mode: 0o600 });
    await writeFile(join(src, 'meta-data'), `instance-id: ${vmName}-${Date.now()}\nlocal-hostname: ${hostname}\n`, {
      mode: 0o600,
    });
    const iso = join(dir, 'seed.iso');
    await run('genisoimage', [
      '-quiet',
      '-output',
      iso,
      '-volid',
      'cidata',
      '-joliet',
      '-rock',
      join(src, 'user-data'),
      join(src, 'meta-data'),
    ]);
    return iso;
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}
