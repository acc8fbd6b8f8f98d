/**
 * Failover clustering and VM mirroring across real network namespaces (the lab: three hosts,
 * their own daemons and fence keepers, a 3-member etcd). For each failure of a protected VM's
 * primary (kill, partition, freeze, the leader itself) the VM comes back on its standby; for a
 * lost standby it keeps running and re-syncs elsewhere; a planned failover moves the running
 * guest (paused while its memory moves). After each: exactly one QEMU for the VM across all
 * hosts, and the counter the guest finds on its disk when it boots on the standby
 * (FD-COUNTER-START) is at least the last value it printed before the failure: nothing it was
 * told was written is lost.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { Lab } from '../../src/lab/lab.js';
import { waitFor, sleep } from '../../src/core/process.js';
import { labCli, labJson, labQemuHosts, labSerial, lastProbe } from '../helpers/lab.js';

const PREFIX = `ha${process.pid % 10000}`;
let lab: Lab;

interface Vm {
  id: string;
  name: string;
  host: string;
  state: string;
  pid: number | null;
  lastError: string | null;
  protection: { state: string; primary: string; standby: string | null; lastError: string | null } | null;
}
interface Host {
  name: string;
  state: string;
  leader: boolean;
}
interface Task {
  id: string;
  state: string;
  result: { from: string; to: string; pausedMs: number } | null;
  error: { code: string; message: string } | null;
}

const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);
const show = (via: string, name: string): Promise<Vm> => json<Vm>(via, ['vm', 'show', name]);
const others = (...not: string[]): string[] => ['h1', 'h2', 'h3'].filter((h) => !not.includes(h));

before(async () => {
  lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
  const r = await labCli(lab, 'h1', ['image', 'build', 'tiny', '--probes']);
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await Lab.destroy(PREFIX);
});

async function leader(): Promise<string> {
  return waitFor(
    'a leader',
    async () => (await json<Host[]>('h1', ['host', 'list']).catch(() => [] as Host[])).find((h) => h.leader)?.name,
    { timeoutMs: 30_000, intervalMs: 300 },
  );
}

/** A running tiny VM on `primary`, mirrored to `standby`, that has written a few counters. */
async function protectedVm(name: string, primary: string, standby: string): Promise<Vm> {
  await json(primary, [
    'vm',
    'create',
    name,
    '--image',
    'tiny',
    '--memory',
    '128M',
    '--host',
    primary,
    '--start',
    'true',
  ]);
  const vm = await show(primary, name);
  const task = await json<Task>(primary, ['vm', 'protect', name, '--standby', standby]);
  assert.equal(task.state, 'succeeded', JSON.stringify(task.error));
  const shown = await show(primary, name);
  assert.equal(shown.protection?.state, 'protected');
  assert.equal(shown.protection?.standby, standby);
  // Writes keep going while protected: the counter advances past what the sync copied.
  const before = lastProbe(await labSerial(lab, primary, vm.id), 'FD-COUNTER') ?? 0n;
  await waitFor(
    'the guest writing counters',
    async () =>
      (lastProbe(await labSerial(lab, primary, vm.id), 'FD-COUNTER') ?? 0n) > before + 3n ? true : undefined,
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  return vm;
}

/** Waits until `name` runs on `host` (asked through `via`). */
async function runningOn(via: string, name: string, host: string, timeoutMs = 60_000): Promise<Vm> {
  return waitFor(
    `${name} running on ${host}`,
    async () => {
      const v = await show(via, name).catch(() => undefined);
      return v?.host === host && v.state === 'running' ? v : undefined;
    },
    { timeoutMs, intervalMs: 200 },
  );
}

/** Lines of the VM's serial log on `host` so far: a boot after this point prints below them. */
const serialMark = async (host: string, id: string): Promise<number> => (await labSerial(lab, host, id)).length;

/** The guest booted on `host` (after `mark`) found at least `printed` on its disk. */
async function assertNoLostWrite(host: string, id: string, printed: bigint, mark: number, what = ''): Promise<void> {
  const start = await waitFor(
    'the guest reading its counter at boot',
    async () => {
      const lines = await labSerial(lab, host, id);
      // A log shorter than the mark was made anew (the run dir was swept): read it whole.
      return (
        lastProbe(lines.length >= mark ? lines.slice(Math.max(0, mark - 1)) : lines, 'FD-COUNTER-START') ?? undefined
      );
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  assert.ok(start >= printed, `${what} counter on disk ${start} < last acknowledged ${printed}: a write was lost`);
}

async function exactlyOnce(id: string, host: string): Promise<void> {
  // A thawed or reconnected host kills its stale copy at once; give it a moment, then demand one.
  const hosts = await waitFor(
    'one QEMU for the VM',
    async () => {
      const hs = await labQemuHosts(lab, id);
      return hs.length === 1 ? hs : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 100 },
  );
  assert.deepEqual(hosts, [host]);
  await sleep(3000); // nothing restarts it on the old host afterwards
  assert.deepEqual(await labQemuHosts(lab, id), [host]);
}

async function unplannedFailover(mode: 'kill' | 'partition' | 'freeze', name: string, primary: string): Promise<void> {
  const [standby, third] = others(primary);
  const vm = await protectedVm(name, primary, standby!);
  const mark = await serialMark(standby!, vm.id);
  await lab.fail(primary, mode);
  const printed = lastProbe(await labSerial(lab, primary, vm.id), 'FD-COUNTER') ?? 0n;
  await runningOn(third!, name, standby!);
  await assertNoLostWrite(standby!, vm.id, printed, mark);
  if (mode !== 'freeze') assert.deepEqual(await labQemuHosts(lab, vm.id), [standby]);
  await lab.heal(primary);
  await lab.waitHostStates(third!, { online: ['h1', 'h2', 'h3'] }, 60_000);
  await exactlyOnce(vm.id, standby!);
  const after = await show(third!, name);
  assert.equal(after.host, standby, 'the returning host does not take its VM back');
  // The VM is mirrored again, to a host that is not its own.
  const again = await waitFor(
    'the mirror re-established',
    async () => {
      const v = await show(third!, name);
      return v.protection?.state === 'protected' ? v : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 300 },
  );
  assert.notEqual(again.protection?.standby, standby);
  await json(third!, ['vm', 'delete', name, '--force', 'true']);
}

test('kill of the primary: the VM runs on its standby, once, with every acknowledged write', async () => {
  const l = await leader();
  await unplannedFailover('kill', 'hakill', others(l)[0]!);
});

test('partition of the primary: it fences itself, the standby takes over, and the host returns without its VM', async () => {
  const l = await leader();
  await unplannedFailover('partition', 'hapart', others(l)[0]!);
});

test('freeze of the primary: the standby takes over; thawed, the old host kills its stale copy', async () => {
  const l = await leader();
  await unplannedFailover('freeze', 'hafrz', others(l)[0]!);
});

test('kill of the leader while it is the primary: a new leader fails the VM over', async () => {
  await unplannedFailover('kill', 'haldr', await leader());
});

test('kill of the standby: the VM keeps running degraded, then re-syncs to another host', async () => {
  const vm = await protectedVm('hasby', 'h1', 'h2');
  const pid = (await show('h1', 'hasby')).pid;
  await lab.fail('h2', 'kill');
  const resynced = await waitFor(
    'protected again on h3',
    async () => {
      const v = await show('h1', 'hasby');
      return v.protection?.state === 'protected' && v.protection.standby === 'h3' ? v : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 300 },
  );
  assert.equal(resynced.host, 'h1');
  assert.equal(resynced.pid, pid, 'the guest never stopped');
  const n = lastProbe(await labSerial(lab, 'h1', vm.id), 'FD-COUNTER') ?? 0n;
  await waitFor(
    'writes going on',
    async () => ((lastProbe(await labSerial(lab, 'h1', vm.id), 'FD-COUNTER') ?? 0n) > n ? true : undefined),
    { timeoutMs: 30_000, intervalMs: 200 },
  );
  await lab.heal('h2');
  assert.deepEqual(await labQemuHosts(lab, vm.id), ['h1']);
  await json('h1', ['vm', 'delete', 'hasby', '--force', 'true']);
});

test('planned failover moves a protected VM to its standby (the same guest, no reboot) and the mirror turns around', async () => {
  const vm = await protectedVm('haplan', 'h2', 'h3');
  const hbBefore = lastProbe(await labSerial(lab, 'h2', vm.id), 'FD-HB') ?? 0n;
  // A mirrored VM does not live-migrate elsewhere (its disks are already on the standby).
  const refused = await labCli(lab, 'h1', ['vm', 'migrate', 'haplan', '--to', 'h1']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /FD_VM_PROTECTED/);
  const task = await json<Task>('h1', ['vm', 'failover', 'haplan']);
  assert.equal(task.state, 'succeeded', JSON.stringify(task.error));
  assert.equal(task.result?.to, 'h3');
  const moved = await runningOn('h1', 'haplan', 'h3');
  assert.deepEqual(await labQemuHosts(lab, vm.id), ['h3']);
  // Same guest, not a reboot: its heartbeat sequence goes on, and it never re-read its counter.
  const hb = await waitFor(
    'heartbeats on h3',
    async () => lastProbe(await labSerial(lab, 'h3', vm.id), 'FD-HB') ?? undefined,
    { timeoutMs: 30_000, intervalMs: 200 },
  );
  assert.ok(hb > hbBefore, `heartbeat ${hb} on h3 does not continue ${hbBefore}`);
  assert.equal(lastProbe(await labSerial(lab, 'h3', vm.id), 'FD-COUNTER-START'), null);
  assert.equal(moved.host, 'h3');
  const back = await waitFor(
    'mirrored back to h2',
    async () => {
      const v = await show('h1', 'haplan');
      return v.protection?.state === 'protected' ? v : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 300 },
  );
  assert.equal(back.protection?.standby, 'h2');
  await json('h1', ['vm', 'delete', 'haplan', '--force', 'true']);
});

test('HA without a mirror: a lost host keeps its VM (its disks are only there), reported, restarted when it returns', async () => {
  const l = await leader();
  const host = others(l)[0]!;
  const via = others(host)[0]!;
  await json(host, [
    'vm',
    'create',
    'halocal',
    '--image',
    'tiny',
    '--memory',
    '128M',
    '--host',
    host,
    '--start',
    'true',
  ]);
  const vm = await show(host, 'halocal');
  await json(host, ['vm', 'ha', 'halocal', '--enable', '--priority', '5']);
  const ha = await json<{ ha: { enabled: boolean; priority: number } }>(via, ['vm', 'show', 'halocal']);
  assert.deepEqual([ha.ha.enabled, ha.ha.priority], [true, 5]);
  await lab.fail(host, 'kill');
  const reported = await waitFor(
    'the leader reporting why it stays down',
    async () => {
      const v = await show(via, 'halocal');
      return v.lastError?.includes('cannot restart elsewhere') ? v : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  assert.equal(reported.host, host);
  assert.deepEqual(await labQemuHosts(lab, vm.id), []);
  await lab.heal(host);
  await runningOn(via, 'halocal', host);
  assert.deepEqual(await labQemuHosts(lab, vm.id), [host]);
  await json(via, ['vm', 'delete', 'halocal', '--force', 'true']);
});

/** Running (not SIGSTOPped) QEMUs of a VM across the lab: two of them is a split brain. */
async function runningCopies(id: string): Promise<number> {
  let n = 0;
  for (const h of await labQemuHostsWithState(id)) if (h.state !== 'T') n++;
  return n;
}

async function labQemuHostsWithState(id: string): Promise<{ host: string; state: string }[]> {
  const out: { host: string; state: string }[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const comm = await readFile(`/proc/${p}/comm`, 'utf8').catch(() => '');
    if (!comm.startsWith('qemu-system')) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const h = lab.state.hosts.find((x) => cmd.includes(`${x.dataDir}/run/${id}/`));
    const stat = await readFile(`/proc/${p}/stat`, 'utf8').catch(() => '');
    if (h) out.push({ host: h.name, state: stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) });
  }
  return out;
}

/** Small seeded PRNG (mulberry32): a failing soak run is replayed with SOAK_SEED. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('soak: 20 random failures and heals, 4 protected VMs on 3 hosts: no split brain, no lost write, all running', async () => {
  const seed = Number(process.env['SOAK_SEED'] ?? Date.now() % 1_000_000);
  const rounds = Number(process.env['SOAK_ROUNDS'] ?? 20);
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  console.log(`soak seed ${seed} (replay with SOAK_SEED=${seed})`);
  const names = ['s1', 's2', 's3', 's4'];
  const placement = ['h1', 'h2', 'h3', 'h1'];
  const ids = new Map<string, string>();
  for (const [i, n] of names.entries()) {
    const host = placement[i]!;
    await json(host, ['vm', 'create', n, '--image', 'tiny', '--memory', '128M', '--host', host, '--start', 'true']);
    ids.set(n, (await show(host, n)).id);
    const t = await json<Task>(host, ['vm', 'protect', n]);
    assert.equal(t.state, 'succeeded', JSON.stringify(t.error));
  }
  const failovers: string[] = [];
  for (let r = 1; r <= rounds; r++) {
    const victim = pick(['h1', 'h2', 'h3']);
    const mode = pick(['kill', 'partition', 'freeze'] as const);
    const via = others(victim)[0]!;
    const before = new Map((await Promise.all(names.map((n) => show(via, n)))).map((v) => [v.name, v]));
    const printed = new Map<string, bigint>();
    const marks = new Map<string, number>();
    for (const [n, v] of before)
      if (v.host === victim && v.protection?.standby) marks.set(n, await serialMark(v.protection.standby, v.id));
    await lab.fail(victim, mode);
    for (const [n, v] of before)
      if (v.host === victim) printed.set(n, lastProbe(await labSerial(lab, victim, v.id), 'FD-COUNTER') ?? 0n);
    // While the host is down: its protected VMs come back elsewhere; never two running copies.
    const movers = [...before.values()].filter((v) => v.host === victim && v.protection?.state === 'protected');
    const deadline = Date.now() + 60_000;
    for (;;) {
      for (const id of ids.values()) assert.ok((await runningCopies(id)) <= 1, `round ${r}: two running copies`);
      const now = await Promise.all(movers.map((v) => show(via, v.name).catch(() => undefined)));
      if (now.every((v) => v && v.host !== victim && v.state === 'running')) break;
      assert.ok(
        Date.now() < deadline,
        `round ${r} (${mode} ${victim}): ${movers.map((m) => m.name).join(',')} not failed over`,
      );
      await sleep(200);
    }
    for (const v of movers) {
      const moved = await show(via, v.name);
      await assertNoLostWrite(
        moved.host,
        v.id,
        printed.get(v.name) ?? 0n,
        marks.get(v.name) ?? 0,
        `round ${r} (${mode} ${victim}) ${v.name} ${victim}->${moved.host}:`,
      );
      failovers.push(`${r}:${mode}:${v.name}:${victim}->${moved.host}`);
    }
    await lab.heal(victim);
    // Healed: every VM runs exactly once and is mirrored again before the next failure.
    let seen = '';
    await waitFor(
      'all VMs running once and protected',
      async () => {
        const vs = await Promise.all(names.map((n) => show(via, n).catch((e: Error) => e)));
        const qemus = await Promise.all([...ids.values()].map((id) => labQemuHosts(lab, id)));
        seen = vs
          .map((v, i) =>
            v instanceof Error
              ? `${names[i]}: ${v.message}`
              : `${v.name}: ${v.state} on ${v.host} (qemu on ${qemus[i]!.join('+') || 'none'}), ` +
                `mirror ${v.protection?.state}:${v.protection?.standby} ${v.protection?.lastError ?? ''} ${v.lastError ?? ''}`,
          )
          .join('; ');
        for (const [i, v] of vs.entries()) {
          if (v instanceof Error || v.state !== 'running' || v.protection?.state !== 'protected') return undefined;
          if (qemus[i]!.length !== 1 || qemus[i]![0] !== v.host) return undefined;
        }
        return true;
      },
      { timeoutMs: 120_000, intervalMs: 500 },
    ).catch((err: Error) => {
      throw new Error(`round ${r} (${mode} ${victim}), after heal: ${err.message}: ${seen}`);
    });
  }
  console.log(`soak: ${rounds} rounds, ${failovers.length} failovers: ${failovers.join(' ')}`);
  assert.ok(failovers.length > 0, 'the soak never failed a primary over');
  for (const n of names) await json('h1', ['vm', 'delete', n, '--force', 'true']);
});
