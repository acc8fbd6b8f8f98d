/**
 * A scripted QEMU behind the QmpChannel interface, for tests of the logic above the control
 * layer (migration recovery, mirrors, takeover) that must run in milliseconds: it keeps a run
 * state, block jobs, NBD exports and a migration status, answers the commands the control
 * layer sends, emits the events QEMU would, and records every command so a test can see what
 * was asked. It fakes a fault nothing on this machine can cause on demand; every behaviour the
 * real QEMU has is tested against the real QEMU elsewhere.
 */
import { EventEmitter } from 'node:events';
import { FdError } from '../../core/errors.js';
import type { QmpChannel, QmpEvent } from '../qmp.js';
import type { RunStatus } from './run-state.js';
import type { MigrationStatus } from './migration.js';

interface FakeJob {
  device: string;
  type: string;
  offset: number;
  len: number;
  ready: boolean;
  status: string;
}

export class FakeQmp extends EventEmitter implements QmpChannel {
  status: RunStatus;
  migration: MigrationStatus = 'none';
  readonly jobs = new Map<string, FakeJob>();
  readonly nodes = new Set<string>();
  readonly exports = new Map<string, string>();
  /** Every command received, in order, with its arguments. */
  readonly log: { command: string; args: Record<string, unknown> | undefined }[] = [];
  /** Commands that fail with this QEMU error message (to script a fault). */
  readonly failing = new Map<string, string>();
  closed = false;

  constructor(initial: RunStatus = 'running') {
    super();
    this.status = initial;
  }

  commands(): string[] {
    return this.log.map((l) => l.command);
  }

  private emitEvent(event: string, data: Record<string, unknown> = {}): void {
    const ev: QmpEvent = { event, data, timestampUs: Date.now() * 1000 };
    queueMicrotask(() => {
      this.emit('event', ev);
      this.emit(event, ev);
    });
  }

  private setMigration(s: MigrationStatus): void {
    this.migration = s;
    this.emitEvent('MIGRATION', { status: s });
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.log.push({ command, args });
    if (this.closed) throw new FdError('FD_QMP_CLOSED', `QMP command ${command} lost: QEMU went away`);
    const fail = this.failing.get(command);
    if (fail) throw new FdError('FD_QMP_ERROR', `QEMU refused ${command}: ${fail}`);
    return this.answer(command, args ?? {}) as T;
  }

  private answer(command: string, a: Record<string, unknown>): unknown {
    switch (command) {
      case 'query-status':
        return { status: this.status, running: this.status === 'running' };
      case 'stop':
        this.status = 'paused';
        this.emitEvent('STOP');
        return {};
      case 'cont':
        this.status = 'running';
        this.emitEvent('RESUME');
        return {};
      case 'system_reset':
        this.emitEvent('RESET');
        return {};
      case 'query-block-jobs':
        return [...this.jobs.values()].map((j) => ({ ...j }));
      case 'blockdev-add':
        this.nodes.add(String(a['node-name']));
        return {};
      case 'blockdev-del':
        if (!this.nodes.delete(String(a['node-name']))) throw new FdError('FD_QMP_ERROR', 'Failed to find node');
        return {};
      case 'blockdev-mirror': {
        const id = String(a['job-id']);
        this.jobs.set(id, { device: id, type: 'mirror', offset: 1024, len: 1024, ready: true, status: 'ready' });
        this.emitEvent('BLOCK_JOB_READY', { device: id });
        return {};
      }
      case 'block-job-cancel': {
        const id = String(a['device']);
        if (!this.jobs.delete(id)) throw new FdError('FD_QMP_ERROR', `Block job '${id}' not found`);
        this.emitEvent('BLOCK_JOB_CANCELLED', { device: id });
        return {};
      }
      case 'migrate-set-capabilities':
      case 'migrate-set-parameters':
      case 'nbd-server-start':
      case 'nbd-server-stop':
      case 'yank':
      case 'send-key':
      case 'system_powerdown':
      case 'eject':
      case 'blockdev-change-medium':
      case 'screendump':
        return {};
      case 'migrate':
        // The source pauses and the transfer completes at once.
        this.status = 'postmigrate';
        this.setMigration('completed');
        return {};
      case 'migrate_cancel':
        if (this.migration === 'active' || this.migration === 'setup') this.setMigration('cancelled');
        return {};
      case 'migrate-incoming':
        this.setMigration('active');
        return {};
      case 'query-migrate':
        return this.migration === 'none' ? {} : { status: this.migration, downtime: 5, 'total-time': 10 };
      case 'block-export-add':
        this.exports.set(String(a['id']), String(a['node-name']));
        return {};
      case 'block-export-del':
        this.exports.delete(String(a['id']));
        return {};
      case 'query-block-exports':
        return [...this.exports].map(([id, node]) => ({ id, 'node-name': node, type: 'nbd' }));
      case 'query-blockstats':
        return [{ stats: { rd_bytes: 0, wr_bytes: 0, wr_operations: 0, wr_total_time_ns: 0 } }];
      case 'quit':
        this.closed = true;
        return {};
      default:
        throw new FdError('FD_QMP_ERROR', `the fake QEMU does not know ${command}`);
    }
  }

  /** The incoming state has all arrived (a target's migration completes). */
  completeIncoming(): void {
    this.status = 'paused';
    this.setMigration('completed');
  }

  waitEvent(name: string, opts: { timeoutMs: number; pred?: (ev: QmpEvent) => boolean }): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const on = (ev: QmpEvent): void => {
        if (opts.pred && !opts.pred(ev)) return;
        clearTimeout(timer);
        this.off(name, on);
        resolve(ev);
      };
      const timer = setTimeout(() => {
        this.off(name, on);
        reject(new FdError('FD_QMP_TIMEOUT', `no ${name} event within ${opts.timeoutMs} ms`));
      }, opts.timeoutMs);
      this.on(name, on);
    });
  }
}
