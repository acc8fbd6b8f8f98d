/** Handlers of images, volumes, networks and hosts (contracts/catalog.ts). */
import { FdError } from '../../core/errors.js';
import { importDirs } from '../../host/host-config.js';
import { checkImportSource } from '../../host/import-paths.js';
import {
  hostList,
  imageBuild,
  imageDelete,
  imageImport,
  imageList,
  imageShow,
  networkCreate,
  networkDelete,
  networkList,
  volumeList,
  volumeResize,
  volumeShow,
} from '../contracts/catalog.js';
import { handle, handleTask, type Binding } from '../handler.js';

export const catalogHandlers: Binding[] = [
  handle(imageList, async ({ svc }) => svc.catalog.listImages()),
  handle(imageShow, async ({ svc }, { name }) => svc.catalog.getImage(name)),
  handleTask(imageBuild, async ({ svc }, { name, force, probes }) => ({
    title: `build image ${name}`,
    target: { kind: 'image', id: name, name },
    work: (t) => svc.provisioner.images.buildTiny(force, t, probes),
  })),
  handleTask(imageImport, async ({ svc }, { file, name }) => {
    await checkImportSource(file, await importDirs(svc.dataDir), { notFound: 'FD_IMAGE_FILE_NOT_FOUND' });
    if (svc.catalog.findImage(name))
      throw new FdError('FD_IMAGE_EXISTS', `an image named ${name} exists`, { hint: 'choose another name' });
    return {
      title: `import image ${name}`,
      target: { kind: 'image', id: name, name },
      work: (t) => svc.provisioner.images.import(name, file, t),
    };
  }),
  handle(imageDelete, ({ svc }, { name }) => svc.provisioner.images.delete(name)),
  handle(volumeList, async ({ svc }) => svc.catalog.listDisks()),
  handle(volumeShow, ({ svc }, { id }) => svc.provisioner.disks.info(id)),
  handleTask(volumeResize, async ({ svc }, { id, size }) => {
    const d = svc.catalog.getDisk(id);
    return {
      title: `resize ${d.name}`,
      target: { kind: 'disk', id: d.id, name: d.name },
      work: (t) => svc.provisioner.disks.resize(d.id, size, t),
    };
  }),
  handle(networkList, async ({ svc }) => svc.catalog.listNetworks()),
  handle(hostList, async ({ svc }) => {
    const leader = await svc.leader.leader();
    return svc.hosts.list().map(({ certPem: _pem, ...h }) => ({ ...h, leader: h.name === leader }));
  }),
  handle(networkCreate, async ({ svc }, { name, cidr, vni }) => {
    if (svc.catalog.listNetworks().some((n) => n.vni === vni))
      throw new FdError('FD_NETWORK_EXISTS', `VXLAN id ${vni} is taken`, { hint: 'choose another --vni' });
    const rec = { name, kind: 'vxlan' as const, bridge: `fdc${vni}`, cidr, vni, createdAt: new Date().toISOString() };
    if (!(await svc.catalog.createNetwork(rec)))
      throw new FdError('FD_NETWORK_EXISTS', `a network named ${name} exists`, { hint: 'choose another name' });
    return rec;
  }),
  handle(networkDelete, async ({ svc }, { name }) => {
    const net = svc.catalog.getNetwork(name);
    const users = svc.vms.records().filter((v) => v.nics.some((n) => n.network === name));
    if (users.length)
      throw new FdError('FD_NETWORK_BUSY', `network ${name} is used by ${users.map((u) => u.name).join(', ')}`, {
        hint: 'delete those VMs first',
      });
    await svc.catalog.removeNetwork(name);
    return net;
  }),
];
