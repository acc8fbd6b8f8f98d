/** Contracts of images, volumes (pool disks), networks and hosts. */
import { z } from 'zod';
import { operation, taskOperation } from '../../core/contract.js';
import { Name, Size } from '../../cluster/state/model.js';
import { Loose, flag } from './common.js';

export const imageList = operation({
  name: 'image.list',
  summary: 'list images: the built-in tiny image, imported disks and ISOs',
  http: { method: 'GET', path: '/images' },
  input: z.strictObject({}),
  output: z.array(Loose),
  permission: 'read',
  cli: { noun: 'image', verb: 'list', columns: ['name', 'kind', 'format', 'sizeBytes', 'host', 'createdAt'] },
});

export const imageShow = operation({
  name: 'image.show',
  summary: 'show one image',
  http: { method: 'GET', path: '/images/:name' },
  input: z.strictObject({ name: Name }),
  output: Loose,
  permission: 'read',
  errors: ['FD_IMAGE_NOT_FOUND'],
  cli: { noun: 'image', verb: 'show', args: ['name'] },
});

export const imageBuild = taskOperation({
  name: 'image.build',
  summary: 'build the built-in tiny image (test and demo guest) from Debian packages',
  http: { method: 'POST', path: '/images/:name/actions/build' },
  input: z.strictObject({
    name: z.literal('tiny').describe('which built-in image (tiny)'),
    force: flag('rebuild even if cached'),
    probes: flag('boot it with the console probes on (heartbeat, counter, echo: for tests and benchmarks)'),
  }),
  output: Loose,
  permission: 'admin',
  cli: { noun: 'image', verb: 'build', args: ['name'] },
});

export const imageImport = taskOperation({
  name: 'image.import',
  summary:
    'import an ISO or a disk image (qcow2, raw, VMDK, VHD: converted to VHD) from an import directory of the host',
  http: { method: 'POST', path: '/images' },
  input: z.strictObject({
    file: z
      .string()
      .min(1)
      .max(4096)
      .describe("absolute path of the file on the daemon's host, in DATA_DIR/import or a configured importDirs"),
    name: Name.describe('image name'),
  }),
  output: Loose,
  // Reading a host file is the host's administrator's call; others upload.
  permission: 'admin',
  errors: ['FD_IMAGE_EXISTS', 'FD_IMAGE_FILE_NOT_FOUND', 'FD_DISK_EXTERNAL_REFERENCE'],
  cli: { noun: 'image', verb: 'import', args: ['file'] },
});

export const imageDelete = operation({
  name: 'image.delete',
  summary: 'delete an image no VM uses',
  http: { method: 'DELETE', path: '/images/:name' },
  input: z.strictObject({ name: Name }),
  output: Loose,
  permission: 'write',
  errors: ['FD_IMAGE_NOT_FOUND', 'FD_IMAGE_BUSY'],
  cli: { noun: 'image', verb: 'delete', args: ['name'] },
});

export const volumeList = operation({
  name: 'volume.list',
  summary: 'list disks in the storage pools',
  http: { method: 'GET', path: '/disks' },
  input: z.strictObject({}),
  output: z.array(Loose),
  permission: 'read',
  cli: { noun: 'volume', verb: 'list', columns: ['name', 'format', 'sizeBytes', 'vmId', 'baseImage', 'path'] },
});

export const volumeShow = operation({
  name: 'volume.show',
  summary: 'show a pool disk with what the VHD engine reads from it',
  http: { method: 'GET', path: '/disks/:id' },
  input: z.strictObject({ id: z.string().max(64) }),
  output: Loose,
  permission: 'read',
  errors: ['FD_DISK_NOT_FOUND'],
  cli: { noun: 'volume', verb: 'show', args: ['id'] },
});

export const volumeResize = taskOperation({
  name: 'volume.resize',
  summary: 'grow a pool disk (the VM must be stopped)',
  http: { method: 'POST', path: '/disks/:id/actions/resize' },
  input: z.strictObject({ id: z.string().max(64), size: Size.describe('new size, e.g. 4G') }),
  output: Loose,
  permission: 'write',
  errors: ['FD_DISK_NOT_FOUND', 'FD_VM_RUNNING', 'FD_DISK_SHRINK'],
  cli: { noun: 'volume', verb: 'resize', args: ['id'] },
});

export const networkList = operation({
  name: 'network.list',
  summary: 'list networks',
  http: { method: 'GET', path: '/networks' },
  input: z.strictObject({}),
  output: z.array(Loose),
  permission: 'read',
  cli: { noun: 'network', verb: 'list', columns: ['name', 'kind', 'bridge', 'cidr'] },
});

export const hostList = operation({
  name: 'host.list',
  summary: 'list hosts with their state and capacity',
  http: { method: 'GET', path: '/hosts' },
  input: z.strictObject({}),
  output: z.array(Loose),
  permission: 'read',
  cli: {
    noun: 'host',
    verb: 'list',
    columns: ['name', 'state', 'leader', 'cpus', 'memoryBytes', 'freeMemoryBytes', 'accel', 'apiUrl'],
  },
});

export const networkCreate = operation({
  name: 'network.create',
  summary: 'create a cluster network: one L2 segment (VXLAN) across all hosts, DHCP and NAT on each',
  http: { method: 'POST', path: '/networks' },
  input: z.strictObject({
    name: Name.describe('network name'),
    kind: z
      .literal('vxlan')
      .default('vxlan')
      .describe('vxlan: spans every host; VMs keep their address wherever they run'),
    cidr: z
      .string()
      .regex(/^(\d{1,3}\.){3}\d{1,3}\/(1[6-9]|2[0-4])$/, 'an IPv4 subnet from /16 to /24, e.g. 10.99.0.0/24')
      .describe('IPv4 subnet'),
    vni: z.coerce.number().int().min(1).max(16_000_000).default(100).describe('VXLAN network id'),
  }),
  output: Loose,
  permission: 'admin',
  status: 201,
  errors: ['FD_NETWORK_EXISTS'],
  cli: { noun: 'network', verb: 'create', args: ['name'] },
});

export const networkDelete = operation({
  name: 'network.delete',
  summary: 'delete a network no VM uses (every host removes its bridge)',
  http: { method: 'DELETE', path: '/networks/:name' },
  input: z.strictObject({ name: Name }),
  output: Loose,
  permission: 'admin',
  errors: ['FD_NETWORK_NOT_FOUND', 'FD_NETWORK_BUSY'],
  cli: { noun: 'network', verb: 'delete', args: ['name'] },
});

export const catalogContracts = [
  imageList,
  imageShow,
  imageBuild,
  imageImport,
  imageDelete,
  volumeList,
  volumeShow,
  volumeResize,
  networkList,
  hostList,
  networkCreate,
  networkDelete,
];
