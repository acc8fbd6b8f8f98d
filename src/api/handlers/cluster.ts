/** Handlers of the cluster itself (contracts/cluster.ts). */
import { addMember, initCluster } from '../../cluster/clustering/membership.js';
import { clusterAddMember, clusterInit, clusterShow } from '../contracts/cluster.js';
import { handle, type Binding } from '../handler.js';

export const clusterHandlers: Binding[] = [
  handle(clusterShow, async ({ svc }) => {
    const { members } = await svc.store.client.cluster.memberList({});
    return {
      leader: (await svc.leader.leader()) ?? null,
      members: members.map((m) => ({ name: m.name || '(starting)', peerUrls: m.peerURLs, clientUrls: m.clientURLs })),
      hosts: svc.hosts.list().map((h) => ({ name: h.name, state: h.state, apiUrl: h.apiUrl })),
    };
  }),
  handle(clusterInit, ({ svc }, { advertise }) =>
    initCluster({
      dataDir: svc.dataDir,
      store: svc.store,
      advertise,
      apiPort: svc.apiPort,
      hostName: svc.hostName,
      log: svc.log,
    }),
  ),
  handle(clusterAddMember, ({ svc }, input) => addMember(svc.store, input)),
];
