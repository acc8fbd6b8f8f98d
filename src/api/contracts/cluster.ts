/** Contracts of the cluster itself: show it, turn this host into its first member, admit a host. */
import { z } from 'zod';
import { operation } from '../../core/contract.js';
import { Name } from '../../cluster/state/model.js';
import { Loose } from './common.js';

export const clusterShow = operation({
  name: 'cluster.show',
  summary: 'show the cluster: etcd members, leader and hosts',
  http: { method: 'GET', path: '/cluster' },
  input: z.strictObject({}),
  output: Loose,
  permission: 'read',
  cli: { noun: 'cluster', verb: 'show' },
});

export const clusterInit = operation({
  name: 'cluster.init',
  summary: 'make this host the first member of a cluster, reachable on ADVERTISE (restart the daemon after)',
  http: { method: 'POST', path: '/cluster/actions/init' },
  input: z.strictObject({ advertise: z.string().max(64).describe('IPv4 address other hosts reach this host on') }),
  output: Loose,
  permission: 'admin',
  errors: ['FD_CLUSTER_EXISTS'],
  cli: { noun: 'cluster', verb: 'init' },
});

/** Called by `cluster join` on the first host (the joining host has no etcd yet). */
export const clusterAddMember = operation({
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
  errors: ['FD_CLUSTER_NOT_INITIALIZED'],
});

export const clusterContracts = [clusterShow, clusterInit, clusterAddMember];
