/** Operations on the cluster itself: show it, turn this host into its first member, admit a host. */
import { z } from 'zod';
import { Name } from '../../cluster/state/model.js';
import { addMember, initCluster } from '../../cluster/clustering/membership.js';
import { defineOperation } from '../operation.js';
import { Loose } from './common.js';

export const clusterOperations = [
  defineOperation({
    name: 'cluster.show',
    summary: 'show the cluster: etcd members, leader and hosts',
    http: { method: 'GET', path: '/cluster' },
    input: z.strictObject({}),
    output: Loose,
    permission: 'read',
    cli: { noun: 'cluster', verb: 'show' },
    run: async ({ svc }) => {
      const { members } = await svc.store.client.cluster.memberList({});
      return {
        leader: (await svc.leader.leader()) ?? null,
        members: members.map((m) => ({ name: m.name || '(starting)', peerUrls: m.peerURLs, clientUrls: m.clientURLs })),
        hosts: (await svc.catalog.listHosts()).map((h) => ({ name: h.name, state: h.state, apiUrl: h.apiUrl })),
      };
    },
  }),
  defineOperation({
    name: 'cluster.init',
    summary: 'make this host the first member of a cluster, reachable on ADVERTISE (restart the daemon after)',
    http: { method: 'POST', path: '/cluster/actions/init' },
    input: z.strictObject({ advertise: z.string().max(64).describe('IPv4 address other hosts reach this host on') }),
    output: Loose,
    permission: 'admin',
    cli: { noun: 'cluster', verb: 'init' },
    run: ({ svc }, { advertise }) =>
      initCluster({
        dataDir: svc.dataDir,
        store: svc.store,
        advertise,
        apiPort: svc.apiPort,
        hostName: svc.hostName,
        log: svc.log,
      }),
  }),
  defineOperation({
    name: 'cluster.addMember',
    summary: 'admit a host: an etcd member for the first three hosts, a client after (used by "cluster join")',
    http: { method: 'POST', path: '/cluster/members' },
    input: z.strictObject({
      name: Name.describe('host name of the joining host'),
      peerUrl: z
        .string()
        .regex(/^http:\/\/[0-9.]+:\d+$/, 'http://IP:PORT')
        .describe("the joining host's etcd peer URL"),
    }),
    output: Loose,
    permission: 'admin',
    status: 201,
    run: ({ svc }, input) => addMember(svc.store, input),
  }),
];
