/** Read side of images, pool disks, networks and hosts in the store. */
import { FdError } from '../../core/errors.js';
import type { DiskRecord, HostRecord, ImageRecord, NetworkRecord } from './model.js';
import type { Store } from './store.js';

export class Catalog {
  constructor(private readonly store: Store) {}

  async listImages(): Promise<ImageRecord[]> {
    return (await this.store.list<ImageRecord>('images/')).map((x) => x.value);
  }

  async getImage(name: string): Promise<ImageRecord> {
    const r = await this.store.get<ImageRecord>(`images/${name}`);
    if (!r) {
      throw new FdError('FD_IMAGE_NOT_FOUND', `no image named ${name}`, {
        hint:
          name === 'tiny' ? 'build it with "flightdeck image build tiny"' : 'list images with "flightdeck image list"',
      });
    }
    return r.value;
  }

  async listDisks(): Promise<DiskRecord[]> {
    return (await this.store.list<DiskRecord>('disks/')).map((x) => x.value);
  }

  async getDisk(id: string): Promise<DiskRecord> {
    const r =
      (await this.store.get<DiskRecord>(`disks/${id}`)) ??
      (await this.store.list<DiskRecord>('disks/')).find((d) => d.value.name === id);
    if (!r)
      throw new FdError('FD_DISK_NOT_FOUND', `no disk ${id}`, { hint: 'list disks with "flightdeck volume list"' });
    return r.value;
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    return (await this.store.list<NetworkRecord>('networks/')).map((x) => x.value);
  }

  async getNetwork(name: string): Promise<NetworkRecord> {
    const r = await this.store.get<NetworkRecord>(`networks/${name}`);
    if (!r)
      throw new FdError('FD_NETWORK_NOT_FOUND', `no network named ${name}`, {
        hint: 'list networks with "flightdeck network list"',
      });
    return r.value;
  }

  async listHosts(): Promise<(HostRecord & { state: HostRecord['state'] })[]> {
    const hosts = await this.store.list<HostRecord>('hosts/');
    const alive = new Set((await this.store.list<{ name: string }>('alive/')).map((x) => x.value.name));
    return hosts.map((h) => ({ ...h.value, state: alive.has(h.value.name) ? h.value.state : 'lost' }));
  }
}
