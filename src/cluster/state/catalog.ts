/**
 * Images, pool disks and networks, with the addresses taken on cluster networks. Reads come
 * from the state cache; writes go to the store.
 */
import { FdError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { StateCache } from './cache.js';
import { keys } from './keys.js';
import type { KvStore } from './kv.js';
import { DiskRecord, ImageRecord, NetworkRecord } from './model.js';
import { parsed, parsedAll } from './parse.js';

export class Catalog {
  constructor(private readonly s: { store: KvStore; cache: StateCache; log: Logger }) {}

  private bad = (key: string, err: FdError): void => this.s.log.warn('skipping a record', { key, err: err.message });

  // ---- images ----

  listImages(): ImageRecord[] {
    return parsedAll(this.s.cache.list(keys.images), ImageRecord, this.bad).map((v) => v.value);
  }

  findImage(name: string): ImageRecord | undefined {
    const kv = this.s.cache.get(keys.image(name));
    return kv ? parsed(kv, ImageRecord).value : undefined;
  }

  getImage(name: string): ImageRecord {
    const img = this.findImage(name);
    if (!img)
      throw new FdError('FD_IMAGE_NOT_FOUND', `no image named ${name}`, {
        hint:
          name === 'tiny' ? 'build it with "flightdeck image build tiny"' : 'list images with "flightdeck image list"',
      });
    return img;
  }

  /** Records a new image; false when the name is taken. */
  async createImage(rec: ImageRecord): Promise<boolean> {
    const rev = await this.s.store.create(keys.image(rec.name), ImageRecord.parse(rec));
    if (rev) await this.s.cache.caughtUp(rev);
    return rev !== undefined;
  }

  async putImage(rec: ImageRecord): Promise<void> {
    await this.s.store.put(keys.image(rec.name), ImageRecord.parse(rec));
  }

  async removeImage(name: string): Promise<void> {
    await this.s.store.remove(keys.image(name));
  }

  // ---- pool disks ----

  listDisks(): DiskRecord[] {
    return parsedAll(this.s.cache.list(keys.disks), DiskRecord, this.bad).map((v) => v.value);
  }

  findDisk(id: string): DiskRecord | undefined {
    const kv = this.s.cache.get(keys.disk(id));
    return kv ? parsed(kv, DiskRecord).value : undefined;
  }

  /** A disk by id or name. */
  getDisk(ref: string): DiskRecord {
    const d = this.findDisk(ref) ?? this.listDisks().find((x) => x.name === ref);
    if (!d)
      throw new FdError('FD_DISK_NOT_FOUND', `no disk ${ref}`, { hint: 'list disks with "flightdeck volume list"' });
    return d;
  }

  async removeDisk(id: string): Promise<void> {
    await this.s.store.remove(keys.disk(id));
  }

  async updateDisk(id: string, fn: (cur: DiskRecord) => DiskRecord): Promise<DiskRecord> {
    const res = await this.s.store.mutate<DiskRecord>(keys.disk(id), (cur) => DiskRecord.parse(fn(cur)));
    await this.s.cache.caughtUp(res.rev);
    return res.value;
  }

  // ---- networks ----

  listNetworks(): NetworkRecord[] {
    return parsedAll(this.s.cache.list(keys.networks), NetworkRecord, this.bad).map((v) => v.value);
  }

  findNetwork(name: string): NetworkRecord | undefined {
    const kv = this.s.cache.get(keys.network(name));
    return kv ? parsed(kv, NetworkRecord).value : undefined;
  }

  getNetwork(name: string): NetworkRecord {
    const n = this.findNetwork(name);
    if (!n)
      throw new FdError('FD_NETWORK_NOT_FOUND', `no network named ${name}`, {
        hint: 'list networks with "flightdeck network list"',
      });
    return n;
  }

  /** Records a new network; false when the name is taken. */
  async createNetwork(rec: NetworkRecord): Promise<boolean> {
    const rev = await this.s.store.create(keys.network(rec.name), NetworkRecord.parse(rec));
    if (rev) await this.s.cache.caughtUp(rev);
    return rev !== undefined;
  }

  async removeNetwork(name: string): Promise<void> {
    await this.s.store.remove(keys.network(name));
  }

  // ---- addresses on cluster networks ----

  /** Takes the first free address of `candidates` for `vmId` (by create-if-absent), or undefined. */
  async takeAddress(network: string, vmId: string, candidates: Iterable<string>): Promise<string | undefined> {
    for (const ip of candidates) {
      if (this.s.cache.get(keys.netIp(network, ip))) continue;
      if (await this.s.store.create(keys.netIp(network, ip), { vmId })) return ip;
    }
    return undefined;
  }

  async releaseAddresses(vmId: string): Promise<void> {
    for (const kv of this.s.cache.list<{ vmId: string }>(keys.netIps))
      if (kv.value.vmId === vmId) await this.s.store.remove(kv.key, kv.rev);
  }

  /** This host's address slot (1..max) on a cluster network, taken once by compare-and-swap. */
  async hostSlot(network: string, host: string, max: number): Promise<number | undefined> {
    const mine = await this.s.store.get<number>(keys.netSlot(network, host));
    if (mine) return mine.value;
    for (let slot = 1; slot <= max; slot++) {
      if (await this.s.store.create(keys.netSlotUsed(network, slot), host)) {
        await this.s.store.put(keys.netSlot(network, host), slot);
        return slot;
      }
    }
    return undefined;
  }
}
