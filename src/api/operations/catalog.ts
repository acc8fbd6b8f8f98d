/** Operations on images, volumes (pool disks), networks and hosts. */
import { z } from 'zod';
import { FdError } from '../../core/errors.js';
import { Name, Size } from '../../cluster/state/model.js';
import { importDirs } from '../../host/host-config.js';
import { checkImportSource } from '../../host/import-paths.js';
import { defineOperation, defineTaskOperation } from '../operation.js';
import { Loose, flag } from './common.js';

export const catalogOperations = [
  defineOperation({
    name: 'image.list',
    summary: 'list images: the built-in tiny image, imported disks and ISOs',
    http: { method: 'GET', path: '/images' },
    input: z.strictObject({}),
    output: z.array(Loose),
    permission: 'read',
    cli: { noun: 'image', verb: 'list', columns: ['name', 'kind', 'format', 'sizeBytes', 'host', 'createdAt'] },
    run: ({ svc }) => svc.catalog.listImages(),
  }),
  defineOperation({
    name: 'image.show',
    summary: 'show one image',
    http: { method: 'GET', path: '/images/:name' },
    input: z.strictObject({ name: Name }),
    output: Loose,
    permission: 'read',
    cli: { noun: 'image', verb: 'show', args: ['name'] },
    run: ({ svc }, { name }) => svc.catalog.getImage(name),
  }),
  defineTaskOperation({
    name: 'image.build',
    summary: 'build the built-in tiny image (test and demo guest) from Debian packages',
    http: { method: 'POST', path: '/images/:name/actions/build' },
    input: z.strictObject({
      name: z.literal('tiny').describe('which built-in image (tiny)'),
      force: flag('rebuild even if cached'),
      probes: flag('boot it with the console probes on (heartbeat, counter, echo: for tests and benchmarks)'),
    }),
    permission: 'admin',
    cli: { noun: 'image', verb: 'build', args: ['name'] },
    run: async ({ svc }, { name, force, probes }) => ({
      title: `build image ${name}`,
      target: { kind: 'image', id: name, name },
      work: (t) => svc.agent.buildTinyImage(force, t, probes),
    }),
  }),
  defineTaskOperation({
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
    // Reading a host file is the host's administrator's call; others upload.
    permission: 'admin',
    cli: { noun: 'image', verb: 'import', args: ['file'] },
    run: async ({ svc }, { file, name }) => {
      await checkImportSource(file, await importDirs(svc.dataDir), { notFound: 'FD_IMAGE_FILE_NOT_FOUND' });
      if (await svc.store.get(`images/${name}`))
        throw new FdError('FD_IMAGE_EXISTS', `an image named ${name} exists`, { hint: 'choose another name' });
      return {
        title: `import image ${name}`,
        target: { kind: 'image', id: name, name },
        work: (t) => svc.agent.importImage(name, file, t),
      };
    },
  }),
  defineOperation({
    name: 'image.delete',
    summary: 'delete an image no VM uses',
    http: { method: 'DELETE', path: '/images/:name' },
    input: z.strictObject({ name: Name }),
    output: Loose,
    permission: 'write',
    cli: { noun: 'image', verb: 'delete', args: ['name'] },
    run: ({ svc }, { name }) => svc.agent.deleteImage(name),
  }),
  defineOperation({
    name: 'volume.list',
    summary: 'list disks in the storage pools',
    http: { method: 'GET', path: '/disks' },
    input: z.strictObject({}),
    output: z.array(Loose),
    permission: 'read',
    cli: { noun: 'volume', verb: 'list', columns: ['name', 'format', 'sizeBytes', 'vmId', 'baseImage', 'path'] },
    run: ({ svc }) => svc.catalog.listDisks(),
  }),
  defineOperation({
    name: 'volume.show',
    summary: 'show a pool disk with what the VHD engine reads from it',
    http: { method: 'GET', path: '/disks/:id' },
    input: z.strictObject({ id: z.string().max(64) }),
    output: Loose,
    permission: 'read',
    cli: { noun: 'volume', verb: 'show', args: ['id'] },
    run: ({ svc }, { id }) => svc.agent.diskInfo(id),
  }),
  defineTaskOperation({
    name: 'volume.resize',
    summary: 'grow a pool disk (the VM must be stopped)',
    http: { method: 'POST', path: '/disks/:id/actions/resize' },
    input: z.strictObject({ id: z.string().max(64), size: Size.describe('new size, e.g. 4G') }),
    permission: 'write',
    cli: { noun: 'volume', verb: 'resize', args: ['id'] },
    run: async ({ svc }, { id, size }) => {
      const d = await svc.catalog.getDisk(id);
      return {
        title: `resize ${d.name}`,
        target: { kind: 'disk', id: d.id, name: d.name },
        work: (t) => svc.agent.resizeDisk(d.id, size, t),
      };
    },
  }),
  defineOperation({
    name: 'network.list',
    summary: 'list networks',
    http: { method: 'GET', path: '/networks' },
    input: z.strictObject({}),
    output: z.array(Loose),
    permission: 'read',
    cli: { noun: 'network', verb: 'list', columns: ['name', 'kind', 'bridge', 'cidr'] },
    run: ({ svc }) => svc.catalog.listNetworks(),
  }),
  defineOperation({
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
    run: async ({ svc }) => {
      const leader = await svc.leader.leader();
      return (await svc.catalog.listHosts()).map(({ certPem: _pem, ...h }) => ({ ...h, leader: h.name === leader }));
    },
  }),
];

export const networkOperations = [
  defineOperation({
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
    cli: { noun: 'network', verb: 'create', args: ['name'] },
    run: async ({ svc }, { name, cidr, vni }) => {
      const nets = await svc.catalog.listNetworks();
      if (nets.some((n) => n.vni === vni))
        throw new FdError('FD_NETWORK_EXISTS', `VXLAN id ${vni} is taken`, {
          hint: 'choose another --vni',
          status: 409,
        });
      const rec = { name, kind: 'vxlan' as const, bridge: `fdc${vni}`, cidr, vni, createdAt: new Date().toISOString() };
      if (!(await svc.store.create(`networks/${name}`, rec))) {
        throw new FdError('FD_NETWORK_EXISTS', `a network named ${name} exists`, {
          hint: 'choose another name',
          status: 409,
        });
      }
      return rec;
    },
  }),
  defineOperation({
    name: 'network.delete',
    summary: 'delete a network no VM uses (every host removes its bridge)',
    http: { method: 'DELETE', path: '/networks/:name' },
    input: z.strictObject({ name: Name }),
    output: Loose,
    permission: 'admin',
    cli: { noun: 'network', verb: 'delete', args: ['name'] },
    run: async ({ svc }, { name }) => {
      const net = await svc.catalog.getNetwork(name);
      const users = (await svc.vms.list()).filter((v) => v.nics.some((n) => n.network === name));
      if (users.length) {
        throw new FdError('FD_NETWORK_BUSY', `network ${name} is used by ${users.map((u) => u.name).join(', ')}`, {
          hint: 'delete those VMs first',
          status: 409,
        });
      }
      await svc.store.remove(`networks/${name}`);
      return net;
    },
  }),
];
