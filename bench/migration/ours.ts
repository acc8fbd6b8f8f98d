/**
 * Ours: two flightdeck daemons on loopback sharing one etcd (as in test/cluster/migration.test.ts),
 * `flightdeck vm migrate VM --to h2` with its defaults (no bandwidth cap, auto-converge, 300 ms
 * downtime limit). The disk goes along (local VHDs, no shared storage): the target gets a
 * differencing child over the same base image and only the top layer is mirrored.
 *
 * The dirtying guest needs a different kernel command line: the bench records a second image,
 * `tiny-dirty`, in the store (the `tiny` record with ` fd.dirty_mb=N` appended; same files), so no
 * daemon code changes for it.
 */
import { join } from 'node:path';
import { sleep } from '../../src/core/process.js';
import { Store } from '../../src/cluster/state/store.js';
import type { ImageRecord } from '../../src/cluster/state/model.js';
import { TestDaemon } from '../../test/helpers/daemon.js';
import { HeartbeatWatch, nowMs } from './heartbeats.js';
import { type CaseResult, dirtyMbOf, observe, settle } from './result.js';

/** BENCH_OURS='{"downtimeLimit":"100ms"}': migrate options for ours (default: none, our defaults). */
const OUR_TUNABLES = JSON.parse(process.env['BENCH_OURS'] ?? '{}') as Record<string, unknown>;

interface Task {
  id: string;
  state: string;
  result: { downtimeMs: number; totalTimeMs: number; ramBytes: number; diskBytes: number; setupTimeMs: number } | null;
  error: { code: string; message: string } | null;
  log: unknown[];
}

export class OursCluster {
  private constructor(
    readonly h1: TestDaemon,
    readonly h2: TestDaemon,
    readonly dirtyArg: string,
  ) {}

  static async start(dirtyArg: string): Promise<OursCluster> {
    const h1 = await TestDaemon.start({ hostName: 'h1' });
    let h2: TestDaemon | undefined;
    try {
      h2 = await TestDaemon.start({ hostName: 'h2', etcd: await h1.etcdUrl() });
      const built = await h1.cli(['image', 'build', 'tiny', '--probes']);
      if (built.code !== 0) throw new Error(`image build tiny: ${built.stdout}${built.stderr}`);
      const store = new Store([await h1.etcdUrl()]);
      try {
        const tiny = (await store.get<ImageRecord>('images/tiny'))?.value;
        if (!tiny?.cmdline) throw new Error('the tiny image record has no cmdline');
        await store.put<ImageRecord>('images/tiny-dirty', {
          ...tiny,
          name: 'tiny-dirty',
          cmdline: `${tiny.cmdline} ${dirtyArg}`,
        });
      } finally {
        store.close();
      }
      return new OursCluster(h1, h2, dirtyArg);
    } catch (err) {
      await h2?.dispose();
      await h1.dispose();
      throw err;
    }
  }

  async migrateCase(
    label: string,
    vmName: string,
    image: string,
    memoryMiB: number,
    capMs: number,
  ): Promise<CaseResult> {
    const { h1, h2 } = this;
    const name = `bench-${vmName}`;
    await h1.json([
      'vm',
      'create',
      name,
      '--image',
      image,
      '--memory',
      `${memoryMiB}M`,
      '--host',
      'h1',
      '--start',
      'true',
    ]);
    const vm = await h1.json<{ id: string }>(['vm', 'show', name]);
    const watch = new HeartbeatWatch();
    try {
      await watch.attach(join(h1.dataDir, 'run', vm.id, 'serial.sock'));
      await settle(watch, image === 'tiny-dirty' ? dirtyMbOf(this.dirtyArg) : 0);
      // The target's serial socket appears when its QEMU starts (-incoming defer): read it from then.
      const onTarget = watch.attach(join(h2.dataDir, 'run', vm.id, 'serial.sock'), { waitMs: capMs + 60_000 });
      onTarget.catch(() => undefined);
      const dirtyRate = watch.dirtyRateMiBps();
      const baseline = watch.maxGap(nowMs() - 3000, nowMs()).gapMs;
      // Through the API, not the CLI: a CLI process per poll would add its own start-up to the times.
      const t0 = nowMs();
      const res0 = await h1.api('POST', `/api/v1/vms/${vm.id}/actions/migrate`, { to: 'h2', ...OUR_TUNABLES });
      if (res0.status !== 202) throw new Error(`migrate: ${res0.status} ${JSON.stringify(res0.body)}`);
      const taskId = (res0.body as Task).id;
      let t: Task;
      let converged = false;
      for (;;) {
        t = (await h1.api('GET', `/api/v1/tasks/${taskId}`)).body as Task;
        if (t.state === 'succeeded') {
          converged = true;
          break;
        }
        if (t.state === 'failed' || t.state === 'cancelled')
          throw new Error(`our migration ${t.state}: ${JSON.stringify(t.error)}`);
        if (nowMs() - t0 > capMs) {
          await h1.json(['task', 'cancel', taskId]);
          t = await h1.json<Task>(['task', 'wait', taskId]);
          break;
        }
        await sleep(20);
      }
      const wallMs = nowMs() - t0;
      if (converged) await onTarget;
      const r = t.result;
      const res = await observe(watch, {
        label,
        converged,
        t0,
        wallMs,
        reportedTotalMs: r?.totalTimeMs ?? null,
        qemuDowntimeMs: r?.downtimeMs ?? null,
        ramBytes: r?.ramBytes ?? null,
        dirtyRateMiBps: dirtyRate,
        baselineGapMs: baseline,
        extra: {
          diskBytes: r?.diskBytes ?? null,
          setupTimeMs: r?.setupTimeMs ?? null,
          dirtyReports: watch.dirty,
          taskLog: t.log,
        },
      });
      return res;
    } finally {
      watch.close();
      const owner = (await h1.json<{ host: string }>(['vm', 'show', name])).host === 'h2' ? h2 : h1;
      await owner.json(['vm', 'delete', name, '--force', 'true']).catch(() => undefined);
    }
  }

  async dispose(): Promise<void> {
    this.h1.kill();
    this.h2.kill();
    await this.h2.dispose();
    await this.h1.dispose();
  }
}
