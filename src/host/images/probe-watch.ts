/**
 * Watches a tiny guest's serial console (QEMU's stdout, the VM's serial unix socket, a log
 * being tailed) and keeps every probe event with the host time it arrived, so tests and
 * benchmarks can wait for "FD-READY", measure heartbeat gaps, or find the last counter value.
 */
import type { Readable } from 'node:stream';
import { FdError } from '../../core/errors.js';
import { ProbeParser, type ProbeEvent } from './probes.js';

/** A probe event and the host's performance.now() when its line arrived. */
export type StampedEvent = ProbeEvent & { atMs: number };
export type EventOf<K extends ProbeEvent['kind']> = Extract<StampedEvent, { kind: K }>;

export interface WaitOptions<K extends ProbeEvent['kind']> {
  where?: (e: EventOf<K>) => boolean;
  /** Only events at or after this index of `events` count. */
  from?: number;
  timeoutMs?: number;
}

export class ProbeWatcher {
  readonly events: StampedEvent[] = [];
  private readonly parser = new ProbeParser();
  private tail = '';
  private ended = false;
  private readonly waiters = new Set<() => void>();

  constructor(stream: Readable) {
    stream.on('data', (chunk: Buffer | string) => this.push(chunk));
    const end = (): void => {
      this.ended = true;
      for (const w of this.waiters) w();
    };
    stream.once('end', end);
    stream.once('close', end);
  }

  /** Feed console bytes directly (when there is no stream). */
  push(chunk: Buffer | string): void {
    const atMs = performance.now();
    const text = typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    this.tail = (this.tail + text).slice(-4000);
    for (const e of this.parser.push(chunk)) this.events.push({ ...e, atMs });
    for (const w of this.waiters) w();
  }

  /** The last few KiB of raw console text, for error messages. */
  consoleTail(): string {
    return this.tail;
  }

  /** Events of one kind seen so far. */
  all<K extends ProbeEvent['kind']>(kind: K): Array<EventOf<K>> {
    return this.events.filter((e): e is EventOf<K> => e.kind === kind);
  }

  last<K extends ProbeEvent['kind']>(kind: K): EventOf<K> | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i]!;
      if (e.kind === kind) return e as EventOf<K>;
    }
    return undefined;
  }

  /** The first matching event; rejects with FD_GUEST_PROBE_TIMEOUT, or when the console ends. */
  waitFor<K extends ProbeEvent['kind']>(kind: K, opts: WaitOptions<K> = {}): Promise<EventOf<K>> {
    const timeoutMs = opts.timeoutMs ?? 90_000;
    return new Promise((resolve, reject) => {
      let next = opts.from ?? 0;
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = (): void => {
        for (; next < this.events.length; next++) {
          const e = this.events[next]!;
          if (e.kind === kind && (!opts.where || opts.where(e as EventOf<K>))) {
            done();
            resolve(e as EventOf<K>);
            return;
          }
        }
        if (this.ended) {
          done();
          reject(new FdError('FD_GUEST_PROBE_TIMEOUT', `guest console closed before probe "${kind}"`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new FdError('FD_GUEST_PROBE_TIMEOUT', `no probe "${kind}" from the guest within ${timeoutMs} ms`, {
            details: { consoleTail: this.tail.slice(-1500) },
          }),
        );
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }
}
