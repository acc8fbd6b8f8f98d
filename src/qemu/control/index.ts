/**
 * The typed control layer over a VM's QMP connection: the only place above the QMP client that
 * names QMP commands. Everything above src/qemu drives QEMU through a QemuControl; the QMP
 * client itself stays with whoever owns the connection (the VM runner).
 */
import type { QmpChannel } from '../qmp.js';
import { BlockJobs } from './block-jobs.js';
import { Display } from './display.js';
import { Media } from './media.js';
import { Migration } from './migration.js';
import { Nbd } from './nbd.js';
import { RunState } from './run-state.js';
import { Stats } from './stats.js';

export class QemuControl {
  readonly run: RunState;
  readonly jobs: BlockJobs;
  readonly nbd: Nbd;
  readonly migration: Migration;
  readonly media: Media;
  readonly display: Display;
  readonly stats: Stats;

  constructor(qmp: QmpChannel) {
    this.run = new RunState(qmp);
    this.jobs = new BlockJobs(qmp);
    this.nbd = new Nbd(qmp);
    this.migration = new Migration(qmp);
    this.media = new Media(qmp);
    this.display = new Display(qmp);
    this.stats = new Stats(qmp);
  }
}

export type { BlockJob, MirrorOptions } from './block-jobs.js';
export type { BlockExport, TcpAddress } from './nbd.js';
export type { MigrationCapabilities, MigrationInfo, MigrationRam, MigrationStatus } from './migration.js';
export { FINAL_STATUSES, isFinal } from './migration.js';
export type { RunStatus } from './run-state.js';
export type { DiskCounters } from './stats.js';
