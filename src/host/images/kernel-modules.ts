/**
 * Picks kernel modules for the initramfs and the root filesystem out of an extracted Debian
 * kernel package. The .deb ships no modules.dep (depmod runs at install time), so dependencies
 * come from each module's own .modinfo "depends=" string; the result is a load order with
 * dependencies first. Modules compressed as .ko.xz or .ko.zst are decompressed here because
 * busybox insmod loads plain .ko.
 */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FdError } from '../../core/errors.js';

/**
 * Loaded by the initramfs, in this order: what the root disk and the NIC need (the cloud kernel
 * has ext4 and the serial console built in, virtio as modules).
 */
export const TINY_INITRAMFS_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
];

/**
 * Loaded from the root filesystem by rcS, off the heartbeat's critical path: the ACPI power
 * button (graceful shutdown), the balloon, and CD-ROM drivers for seed ISOs. This kernel has
 * no AHCI driver, so a CD-ROM is seen on virtio-scsi (any machine) or PIIX IDE (pc machine).
 */
export const TINY_ROOTFS_MODULES = ['button', 'evdev', 'virtio_balloon', 'virtio_scsi', 'sr_mod', 'isofs', 'ata_piix'];

export interface LoadedModule {
  name: string;
  /** Uncompressed module bytes. */
  data: Buffer;
}

const MODULE_FILE = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/;

async function indexModules(dir: string, index: Map<string, string>): Promise<void> {
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) await indexModules(p, index);
    else {
      const m = MODULE_FILE.exec(ent.name);
      // Module names use _ and - interchangeably; the kernel normalizes to _.
      if (m) index.set(m[1]!.replace(/-/g, '_'), p);
    }
  }
}

async function decompress(path: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : 'gzip';
  const { stdout } = await runBinary(tool, ['-dc', path]);
  return stdout;
}

async function runBinary(cmd: string, args: string[]): Promise<{ stdout: Buffer }> {
  // core's run() decodes stdout as text; modules are binary.
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new FdError('FD_TOOL_MISSING', `${cmd} is not installed`, { cause: e })));
    child.on('close', (code) =>
      code === 0
        ? resolve({ stdout: Buffer.concat(out) })
        : reject(new FdError('FD_TOOL_FAILED', `${cmd} ${args.join(' ')} failed: ${Buffer.concat(err).toString()}`)),
    );
  });
}

/** The "depends=" list from a module's .modinfo section (NUL-separated key=value strings). */
export function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('\0depends=');
  const at = ko.indexOf(key);
  if (at < 0) return [];
  const start = at + key.length;
  const end = ko.indexOf(0, start);
  const value = ko.toString('latin1', start, end < 0 ? ko.length : end);
  return value
    .split(',')
    .filter(Boolean)
    .map((d) => d.replace(/-/g, '_'));
}

/**
 * Modules in `roots` plus everything they depend on, dependencies before dependents and
 * otherwise in the order of `roots`. Modules missing from the package are an error when named
 * in `required`; others (built into this kernel, or absent) are skipped.
 */
export async function collectModules(
  moduleRoot: string,
  roots: string[],
  required: string[],
  /** Built into the kernel, or loaded already (by an earlier stage). */
  skip: Set<string>,
): Promise<LoadedModule[]> {
  const index = new Map<string, string>();
  await indexModules(moduleRoot, index);
  const out: LoadedModule[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  async function visit(name: string, chain: string[]): Promise<void> {
    if (done.has(name) || skip.has(name)) return;
    if (visiting.has(name)) throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const path = index.get(name);
    if (!path) {
      if (required.includes(name) || chain.length > 0)
        throw new FdError('FD_IMAGE_MODULE_MISSING', `kernel module ${name} is not in the kernel package`, {
          hint: 'the Debian cloud kernel changed; update the module lists in src/host/images/kernel-modules.ts',
        });
      return;
    }
    visiting.add(name);
    const data = await decompress(path);
    for (const dep of moduleDepends(data)) await visit(dep, [...chain, name]);
    visiting.delete(name);
    done.add(name);
    out.push({ name, data });
  }
  for (const r of roots) await visit(r, []);
  return out;
}

/** Names of modules built into the kernel image (modules.builtin lists their paths). */
export async function builtinModules(moduleRoot: string): Promise<Set<string>> {
  const text = await readFile(join(moduleRoot, 'modules.builtin'), 'utf8').catch(() => '');
  return new Set(
    text
      .split('\n')
      .map((l) => MODULE_FILE.exec(l.split('/').pop() ?? '')?.[1]?.replace(/-/g, '_'))
      .filter((n): n is string => !!n),
  );
}
