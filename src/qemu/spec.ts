/**
 * The VM spec: one zod schema, used by the API, the store, the scheduler and the argv builder.
 * `.strict()` everywhere so a typo is an error, not a silently ignored field; `parseVmSpec`
 * adds the checks a schema cannot make (unique MACs and ids, files that exist) and reports every
 * problem at once as FD_VM_SPEC_INVALID with one line per problem.
 */
import { statSync } from 'node:fs';
import { z } from 'zod';
import { FdError } from '../core/errors.js';
import { NAME_RE } from '../core/ids.js';
import { MiB } from '../core/units.js';

export const MIN_MEMORY_BYTES = 32 * MiB;

/** Device ids become parts of QEMU ids and node names (31 chars at most), so they stay short. */
const DeviceId = z
  .string()
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9_-]{0,15}$/, 'use 1-16 letters, digits, "_" or "-", starting with a letter or digit');

const AbsPath = z.string().regex(/^\//, 'must be an absolute path');

export const DiskSource = z.discriminatedUnion('kind', [
  /** Served by our vdisk process over NBD: the VHD engine is the data path. */
  z.object({ kind: z.literal('vhd'), path: AbsPath }).strict(),
  z.object({ kind: z.literal('raw'), path: AbsPath }).strict(),
  z.object({ kind: z.literal('qcow2'), path: AbsPath }).strict(),
]);

export const DiskSpec = z
  .object({
    id: DeviceId,
    source: DiskSource,
    bus: z.enum(['virtio', 'sata']).default('virtio'),
    readOnly: z.boolean().default(false),
  })
  .strict();

export const CdromSpec = z
  .object({
    id: DeviceId,
    /** The ISO in the drive, or null for an empty drive (media can be changed while running). */
    iso: AbsPath.nullable().default(null),
    /**
     * sata (IDE on pc): what every installer and firmware reads. scsi: on a virtio-scsi
     * controller, for guests without an AHCI driver (the tiny image) and for seed ISOs.
     */
    bus: z.enum(['sata', 'scsi']).default('sata'),
  })
  .strict();

const Mac = z
  .string()
  .regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i, 'a MAC looks like 52:54:00:12:34:56')
  .refine((m) => (parseInt(m.slice(0, 2), 16) & 1) === 0, 'a NIC MAC must be unicast (first octet even)')
  .transform((m) => m.toLowerCase());

export const HostForward = z
  .object({
    protocol: z.enum(['tcp', 'udp']).default('tcp'),
    /** Host side listens on loopback unless told otherwise. */
    hostAddr: z.string().default('127.0.0.1'),
    hostPort: z.number().int().min(1).max(65535),
    guestPort: z.number().int().min(1).max(65535),
  })
  .strict();

export const NicNetwork = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('bridge'),
      bridge: z.string().regex(/^[a-zA-Z0-9_.-]{1,15}$/, 'not a Linux interface name'),
    })
    .strict(),
  z.object({ kind: z.literal('user'), hostfwd: z.array(HostForward).default([]) }).strict(),
]);

export const NicSpec = z
  .object({
    id: DeviceId,
    mac: Mac,
    network: NicNetwork,
  })
  .strict();

export const BootSpec = z.union([
  z
    .object({
      order: z
        .array(z.enum(['disk', 'cdrom', 'network']))
        .min(1)
        .default(['disk']),
    })
    .strict(),
  z
    .object({
      kernel: z.object({ kernel: AbsPath, initrd: AbsPath.optional(), cmdline: z.string().default('') }).strict(),
    })
    .strict(),
]);

export const VmSpec = z
  .object({
    name: z.string().regex(NAME_RE, 'use 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit'),
    uuid: z.uuid(),
    vcpus: z.number().int().min(1).max(64).default(1),
    memoryBytes: z
      .number()
      .int()
      .min(MIN_MEMORY_BYTES, `memory must be at least ${MIN_MEMORY_BYTES / MiB} MiB`)
      .refine((n) => n % MiB === 0, 'memory must be a whole number of MiB'),
    machine: z.enum(['q35', 'pc']).default('q35'),
    firmware: z.enum(['bios', 'uefi']).default('bios'),
    boot: BootSpec.default({ order: ['disk'] }),
    disks: z.array(DiskSpec).default([]),
    cdroms: z.array(CdromSpec).default([]),
    nics: z.array(NicSpec).default([]),
    /** Serial console on a unix socket, everything the guest writes also kept in serial.log. */
    serial: z.boolean().default(true),
    /** VNC on a unix socket (the console proxy tunnels it); adds a VGA device. */
    vnc: z.boolean().default(false),
    restartPolicy: z.enum(['never', 'on-failure', 'always']).default('never'),
    /** Restarts by policy within the runner's window before it gives up (default: the runner's). */
    maxRestarts: z.number().int().min(0).max(100).optional(),
  })
  .strict();

export type VmSpec = z.output<typeof VmSpec>;
export type VmSpecInput = z.input<typeof VmSpec>;
export type DiskSpec = z.output<typeof DiskSpec>;
export type DiskSource = z.output<typeof DiskSource>;
export type CdromSpec = z.output<typeof CdromSpec>;
export type NicSpec = z.output<typeof NicSpec>;
export type NicNetwork = z.output<typeof NicNetwork>;
export type BootSpec = z.output<typeof BootSpec>;
export type HostForward = z.output<typeof HostForward>;

export interface SpecProblem {
  path: string;
  message: string;
}

export interface ParseSpecOptions {
  /** Check that disk images, ISOs, kernels and initrds exist (default true). */
  checkFiles?: boolean;
}

/** Validates a spec; throws FD_VM_SPEC_INVALID listing every problem, or returns the typed spec. */
export function parseVmSpec(input: unknown, opts: ParseSpecOptions = {}): VmSpec {
  const res = VmSpec.safeParse(input);
  if (!res.success) {
    throw invalid(
      res.error.issues.map((i) => ({
        path: i.path.map(String).join('.') || '(spec)',
        message: i.code === 'unrecognized_keys' ? `unknown field(s): ${i.keys.join(', ')}` : i.message,
      })),
      input,
    );
  }
  const problems = specProblems(res.data, opts);
  if (problems.length) throw invalid(problems, input);
  return res.data;
}

/** Problems a schema cannot see: uniqueness across devices, and files that must exist. */
export function specProblems(spec: VmSpec, opts: ParseSpecOptions = {}): SpecProblem[] {
  const problems: SpecProblem[] = [];
  const ids = new Map<string, string>();
  const claim = (id: string, where: string): void => {
    const prev = ids.get(id);
    if (prev) problems.push({ path: where, message: `device id "${id}" is already used by ${prev}` });
    else ids.set(id, where);
  };
  spec.disks.forEach((d, i) => claim(d.id, `disks.${i}.id`));
  spec.cdroms.forEach((c, i) => claim(c.id, `cdroms.${i}.id`));
  spec.nics.forEach((n, i) => claim(n.id, `nics.${i}.id`));

  const macs = new Map<string, number>();
  spec.nics.forEach((n, i) => {
    const prev = macs.get(n.mac);
    if (prev !== undefined)
      problems.push({ path: `nics.${i}.mac`, message: `MAC ${n.mac} is already used by nics.${prev}` });
    else macs.set(n.mac, i);
  });

  const paths = new Map<string, string>();
  spec.disks.forEach((d, i) => {
    const prev = paths.get(d.source.path);
    if (prev)
      problems.push({ path: `disks.${i}.source.path`, message: `${d.source.path} is already attached as ${prev}` });
    else paths.set(d.source.path, `disks.${i}`);
  });

  if ('order' in spec.boot) {
    const order = spec.boot.order;
    if (new Set(order).size !== order.length)
      problems.push({ path: 'boot.order', message: 'a boot device kind is listed twice' });
  }

  if (opts.checkFiles !== false) {
    const mustExist = (path: string, where: string, what: string): void => {
      try {
        const st = statSync(path);
        if (!st.isFile() && !st.isBlockDevice())
          problems.push({ path: where, message: `${what} ${path} is not a file` });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        problems.push({ path: where, message: `${what} ${path} does not exist` });
      }
    };
    spec.disks.forEach((d, i) => mustExist(d.source.path, `disks.${i}.source.path`, 'disk image'));
    spec.cdroms.forEach((c, i) => c.iso && mustExist(c.iso, `cdroms.${i}.iso`, 'ISO image'));
    if ('kernel' in spec.boot) {
      mustExist(spec.boot.kernel.kernel, 'boot.kernel.kernel', 'kernel');
      if (spec.boot.kernel.initrd) mustExist(spec.boot.kernel.initrd, 'boot.kernel.initrd', 'initrd');
    }
  }
  return problems;
}

function invalid(problems: SpecProblem[], input: unknown): FdError {
  const name =
    typeof input === 'object' && input !== null && typeof (input as { name?: unknown }).name === 'string'
      ? ` "${(input as { name: string }).name}"`
      : '';
  return new FdError(
    'FD_VM_SPEC_INVALID',
    `VM spec${name} is invalid:\n${problems.map((p) => `  ${p.path}: ${p.message}`).join('\n')}`,
    { hint: 'fix the listed fields; nothing was started or changed', details: { problems } },
  );
}
