/** What QEMU counts for the guest's disks: bytes, write requests and the time they took. */
import type { QmpChannel } from '../qmp.js';

export interface DiskCounters {
  readBytes: number;
  writeBytes: number;
  writeOps: number;
  writeTimeNs: number;
}

export class Stats {
  constructor(private readonly q: QmpChannel) {}

  /** Summed over the guest's devices (QEMU leaves out unnamed backends such as a mirror's target). */
  async disks(timeoutMs = 1000): Promise<DiskCounters> {
    const blk = await this.q.execute<
      { stats: { rd_bytes: number; wr_bytes: number; wr_operations: number; wr_total_time_ns: number } }[]
    >('query-blockstats', undefined, { timeoutMs });
    return {
      readBytes: blk.reduce((a, b) => a + b.stats.rd_bytes, 0),
      writeBytes: blk.reduce((a, b) => a + b.stats.wr_bytes, 0),
      writeOps: blk.reduce((a, b) => a + b.stats.wr_operations, 0),
      writeTimeNs: blk.reduce((a, b) => a + b.stats.wr_total_time_ns, 0),
    };
  }
}
