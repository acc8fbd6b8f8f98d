/**
 * What `vm show` adds to a VM's record for people: each disk with its size, format and chain
 * (the differencing VHD over its base image), each NIC with its network, bridge and address
 * (the fixed one of a cluster network, else the DHCP lease when this host runs the VM).
 */
import type { VmView } from '../../cluster/state/vms.js';
import { HostNetworks } from '../../host/network.js';
import type { Services } from '../services.js';

export interface DiskDetail {
  id: string;
  diskId: string;
  name: string | null;
  format: string | null;
  sizeBytes: number | null;
  path: string | null;
  /** Top first: this disk's file, then the base image it reads through to. */
  chain: string[];
}

export interface NicDetail {
  id: string;
  mac: string;
  network: string;
  bridge: string | null;
  cidr: string | null;
  ip: string | null;
}

export async function vmDetails(
  svc: Pick<Services, 'catalog' | 'hostName' | 'dataDir'>,
  vm: VmView,
): Promise<{ disks: DiskDetail[]; nics: NicDetail[] }> {
  const disks = await Promise.all(
    vm.disks.map(async (ref): Promise<DiskDetail> => {
      const d = svc.catalog.findDisk(ref.diskId);
      const base = d?.baseImage ? svc.catalog.findImage(d.baseImage) : undefined;
      return {
        ...ref,
        name: d?.name ?? null,
        format: d?.format ?? null,
        sizeBytes: d?.sizeBytes ?? null,
        path: d?.path ?? null,
        chain: [...(d ? [d.path] : []), ...(base ? [`${base.path} (image ${base.name})`] : [])],
      };
    }),
  );
  const local = vm.host === svc.hostName ? new HostNetworks({ dataDir: svc.dataDir }) : undefined;
  const nics = await Promise.all(
    vm.nics.map(async (n): Promise<NicDetail> => {
      const net = svc.catalog.findNetwork(n.network);
      const leased =
        !n.ip && local && net?.kind === 'nat'
          ? (await local.leases(n.network).catch(() => [])).find((l) => l.mac.toLowerCase() === n.mac.toLowerCase())
          : undefined;
      return {
        id: n.id,
        mac: n.mac,
        network: n.network,
        bridge: net?.bridge ?? null,
        cidr: net?.cidr ?? null,
        ip: n.ip ?? leased?.ip ?? null,
      };
    }),
  );
  return { disks, nics };
}
