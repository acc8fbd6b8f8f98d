/**
 * What the guest's users see during a migration, read on the host: the arrival time of every
 * heartbeat line on the serial sockets of the source QEMU (until it goes quiet) and of the target
 * QEMU (from its start). The largest gap between consecutive arrivals, whichever socket they came
 * on, is the downtime the guest's users observe; the guest's own clock stalls with the guest, so
 * the timestamps in the lines cannot measure it.
 */
import { connect, type Socket } from 'node:net';
import { existsSync } from 'node:fs';
import { sleep } from '../../src/core/process.js';

const HB = /FD-HB (\d+) \d+ #/;
const DIRTY = /FD-DIRTY (\d+) (\d+) #/;

export interface Arrival {
  atMs: number;
  seq: number;
  /** Which attach() it came on: 0 = the source, 1 = the target. */
  socket: number;
}

export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export class HeartbeatWatch {
  readonly arrivals: Arrival[] = [];
  /** Latest FD-DIRTY report: MiB and pages written since the dirtier started. */
  dirty: { mib: number; pages: number; atMs: number }[] = [];
  /** FD-READY seen: the guest finished booting (DHCP done or given up). */
  ready = false;
  private sockets: Socket[] = [];
  private attached = 0;
  private closed = false;

  /** Reads `path` (a QEMU serial chardev socket), waiting for it to appear, until close(). */
  async attach(path: string, opts: { waitMs?: number } = {}): Promise<void> {
    const deadline = nowMs() + (opts.waitMs ?? 60_000);
    for (;;) {
      if (this.closed) return;
      if (existsSync(path)) {
        try {
          await this.open(path);
          return;
        } catch (err) {
          // QEMU creates the socket file just before it listens.
          if (!isErr(err, 'ECONNREFUSED') && !isErr(err, 'ENOENT')) throw err;
        }
      }
      if (nowMs() > deadline) throw new Error(`serial socket ${path} did not appear`);
      await sleep(2);
    }
  }

  private open(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      let socket = -1;
      const s = connect(path);
      let buf = '';
      s.once('connect', () => {
        // Counted on connect: refused attempts at a socket not yet listening do not count.
        socket = this.attached++;
        this.sockets.push(s);
        resolve();
      });
      s.once('error', reject);
      s.on('data', (b: Buffer) => {
        const at = nowMs();
        buf += b.toString('latin1');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          const hb = HB.exec(line);
          if (hb) this.arrivals.push({ atMs: at, seq: Number(hb[1]), socket });
          if (line.includes('FD-READY ')) this.ready = true;
          const d = DIRTY.exec(line);
          if (d) this.dirty.push({ mib: Number(d[1]), pages: Number(d[2]), atMs: at });
        }
      });
    });
  }

  /** When the first heartbeat arrived on the target's socket: the guest runs there. */
  firstOnTarget(): number | null {
    return this.arrivals.find((a) => a.socket === 1)?.atMs ?? null;
  }

  lastSeq(): number {
    return this.arrivals.at(-1)?.seq ?? -1;
  }

  /** Largest gap between consecutive heartbeat arrivals in [fromMs, toMs], and where it was. */
  maxGap(fromMs: number, toMs: number): { gapMs: number; atMs: number; seqBefore: number; seqAfter: number } {
    const xs = this.arrivals.filter((a) => a.atMs >= fromMs && a.atMs <= toMs).sort((a, b) => a.atMs - b.atMs);
    let best = { gapMs: 0, atMs: fromMs, seqBefore: -1, seqAfter: -1 };
    for (let i = 1; i < xs.length; i++) {
      const gap = xs[i]!.atMs - xs[i - 1]!.atMs;
      if (gap > best.gapMs)
        best = { gapMs: gap, atMs: xs[i - 1]!.atMs, seqBefore: xs[i - 1]!.seq, seqAfter: xs[i]!.seq };
    }
    return best;
  }

  /** Guest dirtying rate over the last reports, in MiB/s of page writes (0 when no dirtier). */
  dirtyRateMiBps(): number {
    const d = this.dirty;
    if (d.length < 2) return 0;
    const a = d[Math.max(0, d.length - 4)]!;
    const b = d.at(-1)!;
    return b.atMs > a.atMs ? ((b.pages - a.pages) * 4096) / (1 << 20) / ((b.atMs - a.atMs) / 1000) : 0;
  }

  close(): void {
    this.closed = true;
    for (const s of this.sockets) s.destroy();
  }
}

function isErr(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}
