/**
 * Follows a guest's serial log file (QEMU's chardev logfile, run/ID/q/serial.log) by polling it
 * every few milliseconds, and keeps what the failover bench needs with the host-side arrival
 * time: the first heartbeat, the highest durable counter printed and the counter the guest found
 * on its disk at boot. Polling the file, not connecting to the serial socket, leaves the socket
 * to the daemon and works for a file that does not exist yet (the standby's, before takeover)
 * or that the host removes later (the old primary's, after it returns).
 */
import { open } from 'node:fs/promises';
import { ProbeParser } from '../../src/host/images/probes.js';

export class SerialTail {
  /** Date.now() when the file was first seen: QEMU opens it as it starts. */
  appearedAt: number | null = null;
  /** Date.now() when the first FD-HB line was read, null until then. */
  firstHeartbeatAt: number | null = null;
  /** Highest FD-COUNTER seen: the last write the guest was told is durable. */
  maxCounter: bigint | null = null;
  /** FD-COUNTER-START: the counter the guest read from its disk when it booted. */
  counterStart: bigint | null = null;
  /** FD-COUNTER lines with their arrival time (for the write rate of a window). */
  readonly counters: { at: number; n: bigint }[] = [];
  private readonly parser = new ProbeParser();
  private offset = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private polling: Promise<void> = Promise.resolve();

  constructor(
    readonly path: string,
    private readonly intervalMs = 10,
  ) {}

  start(): this {
    const loop = (): void => {
      if (this.stopped) return;
      this.polling = this.poll().finally(() => {
        if (!this.stopped) this.timer = setTimeout(loop, this.intervalMs);
      });
    };
    loop();
    return this;
  }

  /** Reads what was appended since the last poll (nothing when the file is not there). */
  async poll(): Promise<void> {
    let fh;
    try {
      fh = await open(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      this.appearedAt ??= Date.now();
      const { size } = await fh.stat();
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
      this.offset += bytesRead;
      const at = Date.now();
      for (const ev of this.parser.push(buf.subarray(0, bytesRead))) {
        if (ev.kind === 'heartbeat' && this.firstHeartbeatAt === null) this.firstHeartbeatAt = at;
        else if (ev.kind === 'counter') {
          this.counters.push({ at, n: ev.n });
          if (this.maxCounter === null || ev.n > this.maxCounter) this.maxCounter = ev.n;
        } else if (ev.kind === 'counter-start' && this.counterStart === null) this.counterStart = ev.n;
      }
    } finally {
      await fh.close();
    }
  }

  /** Stops polling after one last read. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.polling;
    await this.poll();
  }
}
