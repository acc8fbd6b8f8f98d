/** A real private etcd for tests, in a temp dir on free loopback ports; dispose() stops it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureEmbeddedEtcd, stopEmbeddedEtcd } from '../../src/cluster/clustering/etcd-process.js';
import { silentLogger } from '../../src/core/log.js';
import { Store } from '../../src/cluster/state/store.js';

export interface TestEtcd {
  dir: string;
  url: string;
  store(root?: string): Store;
  dispose(): Promise<void>;
}

export async function startTestEtcd(): Promise<TestEtcd> {
  const dir = await mkdtemp(join(tmpdir(), 'fd-etcd-'));
  const { clientUrl } = await ensureEmbeddedEtcd(dir, silentLogger);
  const stores: Store[] = [];
  return {
    dir,
    url: clientUrl,
    store(root?: string) {
      const s = new Store([clientUrl], root);
      stores.push(s);
      return s;
    },
    async dispose() {
      for (const s of stores) s.close();
      await stopEmbeddedEtcd(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
