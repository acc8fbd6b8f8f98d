/**
 * Leader election through etcd's election API: every host campaigns, one leads and runs the
 * cluster-wide controllers. Losing the leader changes nothing for running VMs: a new one is
 * elected when the old one's session lease expires, and controllers are written to be
 * idempotent so the new leader can redo whatever the old one was halfway through.
 */
import { EventEmitter } from 'node:events';
import type { Campaign, Election } from 'etcd3';
import type { Logger } from '../../core/log.js';
import type { Store } from '../state/store.js';

export const ELECTION_NAME = 'flightdeck-leader';

export class LeaderElection extends EventEmitter {
  private election: Election;
  private campaign: Campaign | undefined;
  private stopped = false;
  isLeader = false;

  constructor(
    store: Store,
    private readonly hostName: string,
    private readonly log: Logger,
    ttlS = 3,
  ) {
    super();
    this.election = store.client.election(ELECTION_NAME, ttlS);
  }

  start(): void {
    if (this.stopped) return;
    const c = this.election.campaign(this.hostName);
    this.campaign = c;
    c.on('elected', () => {
      this.isLeader = true;
      this.log.info('elected leader of the cluster');
      this.emit('elected');
    });
    let failed = false;
    c.on('error', (err: unknown) => {
      // A campaign may report several errors; only its first starts a new campaign.
      if (failed || this.campaign !== c) return;
      failed = true;
      const was = this.isLeader;
      this.isLeader = false;
      if (was) this.emit('lost');
      if (this.stopped) return;
      this.log.warn('leader campaign failed; campaigning again', { err: String(err) });
      setTimeout(() => this.start(), 1000).unref();
    });
  }

  /** The current leader's host name, if there is one. */
  async leader(): Promise<string | undefined> {
    return this.election.leader();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const c = this.campaign;
    this.campaign = undefined;
    if (c) await c.resign().catch(() => undefined);
    if (this.isLeader) this.emit('lost');
    this.isLeader = false;
  }
}
