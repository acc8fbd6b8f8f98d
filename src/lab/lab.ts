/**
 * The lab: N flightdeck hosts on one machine, each in its own network namespace with its own
 * data dir, daemon, QEMU processes and address on a shared bridge, over a 3-member etcd
 * cluster among the first three hosts. People use it to try clustering; the cluster,
 * migration and HA tests and benchmarks use it for every multi-host case, and inject faults
 * with `fail` (kill, partition, freeze) and undo them with `heal`.
 *
 *   const lab = await Lab.up({ hosts: 3 });
 *   await lab.api('h2', 'POST', '/api/v1/vms', {...});
 *   await lab.fail('h3', 'partition'); ...; await lab.heal('h3');
 *   await lab.down();
 *
 * Everything it makes is named from the prefix (see names.ts), so `Lab.destroy(prefix)` removes
 * a lab even when a crashed `up` left no state file.
 */
import { spawn } from 'node:child_process';
import { chmod, mkdir } from 'node:fs/promises';
import { FdError } from '../core/errors.js';
import { run, sleep, type RunResult } from '../core/process.js';
import { detectAccel } from '../qemu/accel.js';
import type { HostRecord } from '../cluster/state/model.js';
import { checkPrefix, DEFAULT_PREFIX, labDir, LAB_ROOT, MAX_HOSTS, parseSubnet } from './names.js';
import {
  createBridge,
  createHostNetwork,
  hasIsolationTable,
  isPartitioned,
  labLinks,
  labNamespaces,
  netnsExists,
  partition,
  unpartition,
} from './net.js';
import { FAIL_MODES, readState, writeState, type FailMode, type LabHost, type LabState } from './state.js';
import { inNetns, killNetns, netnsPids, signal, stopped, waitExited, type PrivateDirs } from './procs.js';
import { etcdMemberList, memberPid, startEtcdMember, waitMemberHealthy, type EtcdMemberInfo } from './etcd-member.js';
import { daemonPid, hostEndpoint, hostEnv, REPO_BIN, startHostDaemon, waitDaemonReady } from './host-daemon.js';
import { labPrefixes, pickSubnet, planLab, withSubnetLock } from './plan.js';
import { destroyLab, pathExists, type DownReport } from './teardown.js';
import { requestJson, tryRequestJson, type Endpoint, type HttpAnswer } from './http.js';

export type { FailMode, LabHost, LabState } from './state.js';
export { FAIL_MODES } from './state.js';
export type { DownReport } from './teardown.js';

export interface LabUpOptions {
  hosts: number;
  prefix?: string;
  /** An IPv4 /24; by default the first free 10.77.N.0/24, starting at 10.77.0.0/24. */
  subnet?: string;
  /** Tear down an existing lab of the same prefix first instead of refusing. */
  force?: boolean;
  /** Leave what was built when `up` fails, to read its logs (`down` removes it later). */
  keepOnFailure?: boolean;
  /** How long daemons and etcd members get to become ready. */
  readyTimeoutMs?: number;
  /** Called with a line for each step, for progress output. */
  onStep?: (message: string) => void;
  /**
   * Each host sees only its own data dir under the lab dir (a tmpfs hides the others in its
   * processes' mount namespace), so code that reads another host's files by path fails here
   * as it would on separate machines. Off by default for now: images are not yet copied
   * between hosts.
   */
  isolateDirs?: boolean;
  /** Aborting stops after the current step and removes what was built (Ctrl-C on `lab up`). */
  signal?: AbortSignal;
}

export interface LabHostStatus {
  name: string;
  ip: string;
  apiUrl: string;
  /** The host's namespace exists. */
  netns: boolean;
  daemonPid: number | null;
  /** Pid of its etcd member; null when it is a member that does not run; '-' when not a member. */
  etcdPid: number | null | '-';
  /** The daemon answered its health check just now. */
  api: 'up' | 'down';
  /** State in the cluster's host list as another host sees it. */
  state: HostRecord['state'] | 'unknown';
  /** The fault injected with `fail`, or what is observed (frozen, partitioned). */
  failure: FailMode | null;
  processes: number;
}

export interface LabStatus {
  prefix: string;
  subnet: string;
  etcdEndpoints: string[];
  etcdMembers: string[] | null;
  hosts: LabHostStatus[];
}

type Step = (message: string) => void;

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new FdError('FD_LAB_NOT_ROOT', 'the lab needs root (network namespaces, bridges, nftables)', {
      hint: 'run it as root, e.g. with sudo',
    });
  }
}

export class Lab {
  private stateWrites: Promise<void> = Promise.resolve();

  private constructor(private st: LabState) {}

  get prefix(): string {
    return this.st.prefix;
  }
  get hosts(): readonly LabHost[] {
    return this.st.hosts;
  }
  get etcdEndpoints(): readonly string[] {
    return this.st.etcdEndpoints;
  }
  get subnet(): string {
    return this.st.subnet;
  }
  /** A copy of the state as recorded in lab.json. */
  get state(): LabState {
    return structuredClone(this.st);
  }

  /** Prefixes of the labs on this machine (with a state file or any namespace left). */
  static list(): Promise<string[]> {
    return labPrefixes();
  }

  static async load(prefix = DEFAULT_PREFIX): Promise<Lab> {
    checkPrefix(prefix);
    const st = await readState(prefix);
    if (!st) {
      throw new FdError('FD_LAB_NOT_FOUND', `there is no lab "${prefix}"`, {
        hint: `start one with "flightdeck lab up --hosts 3${prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`}"`,
      });
    }
    if (st.phase !== 'up') {
      throw new FdError(
        'FD_LAB_INCOMPLETE',
        `lab "${prefix}" was never completely built (its "lab up" failed or runs now)`,
        {
          hint: `remove it with "flightdeck lab down${prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`}"`,
        },
      );
    }
    return new Lab(st);
  }

  static async up(opts: LabUpOptions): Promise<Lab> {
    requireRoot();
    const prefix = checkPrefix(opts.prefix ?? DEFAULT_PREFIX);
    const n = opts.hosts;
    if (!Number.isInteger(n) || n < 1 || n > MAX_HOSTS) {
      throw new FdError('FD_LAB_BAD_HOSTS', `--hosts must be a whole number from 1 to ${MAX_HOSTS}, not ${n}`, {
        hint: 'e.g. --hosts 3 (three hosts give a 3-member etcd cluster)',
      });
    }
    const onStep: Step = opts.onStep ?? (() => undefined);
    const exists =
      (await pathExists(labDir(prefix))) ||
      (await labNamespaces(prefix)).length > 0 ||
      (await labLinks(prefix)).length > 0 ||
      (await hasIsolationTable(prefix));
    if (exists) {
      if (!opts.force) {
        throw new FdError('FD_LAB_EXISTS', `a lab "${prefix}" exists already`, {
          hint: `use it, remove it with "flightdeck lab down${prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`}", or pass --force to rebuild it`,
        });
      }
      onStep(`removing the existing lab "${prefix}" (--force)`);
      await Lab.destroy(prefix);
    }
    await mkdir(LAB_ROOT, { recursive: true, mode: 0o755 });
    // The state is written before anything exists: a crash from here on leaves something
    // `down` can read. The subnet is picked and claimed under a lock, so labs coming up side
    // by side (parallel test files) never pick the same one.
    const st = await withSubnetLock(async () => {
      const planned = planLab(prefix, n, await pickSubnet(opts.subnet));
      planned.isolateDirs = opts.isolateDirs === true;
      await mkdir(labDir(prefix), { recursive: true, mode: 0o700 });
      // Search only (no listing) for the hosts' VM users, on their way to their run dirs.
      await chmod(labDir(prefix), 0o711);
      await writeState(planned);
      return planned;
    });
    const hosts = st.hosts;
    const subnet = parseSubnet(st.subnet);
    const lab = new Lab(st);
    const readyTimeoutMs = opts.readyTimeoutMs ?? 60_000;
    try {
      const started = Date.now();
      const since = (): string => `${((Date.now() - started) / 1000).toFixed(1)}s`;
      const step = (message: string): void => {
        if (opts.signal?.aborted) {
          throw new FdError('FD_LAB_CANCELLED', `lab up "${prefix}" was cancelled`, {
            hint: 'nothing of it is left; run "flightdeck lab up" again',
          });
        }
        onStep(message);
      };
      step(`network: bridge ${st.bridge} (${subnet.cidr}, this machine is ${st.gatewayIp}) and ${n} namespaces`);
      const accel = detectAccel({ dataDir: labDir(prefix) });
      // Never an unhandled rejection while other steps run; awaited below.
      accel.catch(() => undefined);
      await createBridge(prefix, subnet);
      await Promise.all(hosts.map((h) => createHostNetwork(prefix, h.index, h.netns, subnet)));
      await Promise.all(hosts.map((h) => mkdir(h.dataDir, { recursive: true, mode: 0o700 })));
      const memberHosts = hosts.filter((h) => h.etcdMember);
      step(`etcd: ${memberHosts.length}-member cluster on ${memberHosts.map((h) => h.name).join(', ')} (${since()})`);
      const memberPids = await Promise.all(
        memberHosts.map((h) => startEtcdMember(h, memberHosts, `fdlab-${prefix}`, lab.privateDirs(h))),
      );
      await Promise.all(memberHosts.map((h, i) => waitMemberHealthy(h, memberPids[i]!, readyTimeoutMs)));

      // The accelerator probe (a short QEMU boot) ran alongside the network and etcd steps.
      st.accel = (await accel).accel;
      await writeState(st);
      step(`daemons: flightdeck serve on ${hosts.map((h) => h.name).join(', ')} (accel ${st.accel}) (${since()})`);
      const pids = await Promise.all(
        hosts.map((h) => startHostDaemon(h, st.etcdEndpoints, st.accel, lab.privateDirs(h))),
      );
      const eps = await Promise.all(hosts.map((h, i) => waitDaemonReady(h, pids[i]!, readyTimeoutMs)));
      hosts.forEach((h, i) => (h.token = eps[i]!.token ?? ''));
      await writeState(st);

      step(`cluster: waiting until every host lists ${n} hosts online (${since()})`);
      await Promise.all(
        hosts.map((h) => lab.waitHostStates(h.name, { online: hosts.map((x) => x.name) }, readyTimeoutMs)),
      );
      st.phase = 'up';
      await writeState(st);
      onStep(`lab "${prefix}" is up with ${n} hosts (${since()})`);
      return lab;
    } catch (err) {
      if (!opts.keepOnFailure) {
        onStep(`lab up failed; removing what was built`);
        await Lab.destroy(prefix).catch(() => undefined);
      }
      throw err;
    }
  }

  /**
   * Removes every trace of lab `prefix`: its processes (daemons, etcd members, QEMU, vdisk,
   * dnsmasq: everything in its namespaces or naming its data dir), namespaces, links, bridge,
   * nft table and data dirs. Works from names alone, so it finishes any partial state.
   */
  static destroy(prefix: string, onStep?: Step): Promise<DownReport> {
    requireRoot();
    return destroyLab(checkPrefix(prefix), onStep ?? (() => undefined));
  }

  down(onStep?: Step): Promise<DownReport> {
    return Lab.destroy(this.prefix, onStep);
  }

  /** What a host's processes may see of the lab dir: only their own data dir when isolated. */
  private privateDirs(h: LabHost): PrivateDirs | undefined {
    return this.st.isolateDirs ? { labDir: labDir(this.prefix), own: h.dataDir } : undefined;
  }

  host(name: string): LabHost {
    const h = this.st.hosts.find((x) => x.name === name);
    if (!h) {
      throw new FdError('FD_LAB_HOST_NOT_FOUND', `lab "${this.prefix}" has no host ${name}`, {
        hint: `its hosts are ${this.st.hosts.map((x) => x.name).join(', ')}`,
      });
    }
    return h;
  }

  /** How to reach a host's API from the root namespace: URL, its certificate, its token. */
  async endpoint(name: string): Promise<Endpoint> {
    const h = this.host(name);
    const ep = await hostEndpoint(h);
    if (!ep) {
      throw new FdError('FD_LAB_DAEMON_FAILED', `host ${name} has no certificate or token yet`, {
        hint: `see ${h.dataDir}/daemon.log`,
      });
    }
    return ep;
  }

  /** Calls a host's REST API with its own admin token (`path` starts with /api/v1). */
  async api<T>(name: string, method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<HttpAnswer<T>> {
    return requestJson<T>(await this.endpoint(name), method, path, body, timeoutMs);
  }

  /** The host list as `name` sees it (`flightdeck host list` through that host). */
  async hostList(name: string): Promise<HostRecord[]> {
    const res = await this.api<HostRecord[]>(name, 'GET', '/api/v1/hosts', undefined, 5000);
    if (res.status !== 200) throw new Error(`GET /api/v1/hosts on ${name} answered ${res.status}`);
    return res.body;
  }

  /**
   * Waits until host `via` lists each named host in the given state (online, lost, ...).
   * Returns the host list it saw last.
   */
  async waitHostStates(
    via: string,
    want: Partial<Record<HostRecord['state'], string[]>>,
    timeoutMs: number,
  ): Promise<HostRecord[]> {
    const deadline = Date.now() + timeoutMs;
    let last: HostRecord[] | string = 'no answer';
    for (;;) {
      const ep = await hostEndpoint(this.host(via));
      const res = ep ? await tryRequestJson<HostRecord[]>(ep, 'GET', '/api/v1/hosts', 2000) : undefined;
      if (res?.status === 200) {
        last = res.body;
        const states = new Map(res.body.map((h) => [h.name, h.state]));
        const ok = Object.entries(want).every(([state, names]) => names.every((nm) => states.get(nm) === state));
        if (ok) return res.body;
      }
      if (Date.now() > deadline) {
        const seen = typeof last === 'string' ? last : last.map((h) => `${h.name}=${h.state}`).join(' ');
        throw new FdError(
          'FD_TIMEOUT',
          `host list on ${via} did not reach ${JSON.stringify(want)} in ${timeoutMs} ms (saw: ${seen})`,
        );
      }
      await sleep(200);
    }
  }

  /** The etcd cluster's members as the first member that answers reports them. */
  async etcdMembers(): Promise<EtcdMemberInfo[]> {
    let lastErr: unknown;
    for (const ep of this.st.etcdEndpoints) {
      try {
        return await etcdMemberList(ep);
      } catch (err) {
        lastErr = err;
      }
    }
    throw new FdError('FD_LAB_ETCD_FAILED', 'no etcd member of the lab answers', { cause: lastErr });
  }

  /**
   * argv and environment that run `argv` inside host `name`, for callers that spawn the
   * process themselves (a long-running client in a benchmark).
   */
  command(
    name: string,
    argv: string[],
    env: NodeJS.ProcessEnv = {},
  ): { cmd: string; args: string[]; env: NodeJS.ProcessEnv } {
    const h = this.host(name);
    if (argv.length === 0) {
      throw new FdError('FD_LAB_BAD_ARGS', 'nothing to run', { hint: 'e.g. flightdeck lab exec h1 -- ip -br addr' });
    }
    return {
      cmd: 'ip',
      args: inNetns(h.netns, argv, this.privateDirs(h)),
      env: hostEnv({
        FLIGHTDECK_DATA_DIR: h.dataDir,
        FLIGHTDECK_LAB_HOST: h.name,
        PATH: `${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}:${REPO_BIN}`,
        ...env,
      }),
    };
  }

  /**
   * Runs `argv` inside host `name` with FLIGHTDECK_DATA_DIR set to its data dir (so
   * `flightdeck vm list` talks to that host). `stdio: 'inherit'` passes the terminal through;
   * the default collects output. Resolves with the command's exit code, never throws on it.
   */
  async exec(
    name: string,
    argv: string[],
    opts: { stdio?: 'pipe' | 'inherit'; input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
  ): Promise<RunResult> {
    const c = this.command(name, argv, opts.env);
    if (opts.stdio !== 'inherit') {
      return run(c.cmd, c.args, {
        env: c.env,
        allowFail: true,
        ...(opts.input !== undefined ? { input: opts.input } : {}),
        ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
      });
    }
    return new Promise((resolve, reject) => {
      const child = spawn(c.cmd, c.args, { env: c.env, stdio: 'inherit', timeout: opts.timeoutMs });
      child.once('error', reject);
      child.once('close', (code, sig) => resolve({ code: code ?? (sig ? 128 : 1), stdout: '', stderr: '' }));
    });
  }

  /**
   * Injects a fault into host `name`: `kill` SIGKILLs every process of the host (daemon, etcd
   * member, QEMU, vdisk); `partition` cuts it off the bridge while everything keeps running;
   * `freeze` SIGSTOPs all its processes. `heal` undoes any of them.
   */
  async fail(name: string, mode: FailMode): Promise<{ host: string; mode: FailMode; processes: number }> {
    requireRoot();
    if (!FAIL_MODES.includes(mode)) {
      throw new FdError('FD_LAB_BAD_MODE', `fail mode "${String(mode)}" is not one of ${FAIL_MODES.join(', ')}`, {
        hint: 'kill: SIGKILL its processes; partition: cut its link; freeze: SIGSTOP its processes',
      });
    }
    const h = this.host(name);
    let processes: number;
    if (mode === 'kill') processes = (await killNetns(h.netns)).length;
    else if (mode === 'partition') {
      await partition(h.netns);
      processes = (await netnsPids(h.netns)).length;
    } else processes = await freezeNetns(h.netns);
    await this.recordFailure(name, mode);
    return { host: name, mode, processes };
  }

  /**
   * Makes host `name` healthy again, whatever was done to it: removes a partition, resumes
   * frozen processes, starts its etcd member (which rejoins with its data) and its daemon when
   * they do not run (the daemon takes its VMs over or restarts them), and waits until the
   * daemon answers.
   */
  async heal(name: string, opts: { readyTimeoutMs?: number } = {}): Promise<{ host: string; restarted: string[] }> {
    requireRoot();
    const h = this.host(name);
    const timeoutMs = opts.readyTimeoutMs ?? 60_000;
    await unpartition(h.netns);
    signal(await netnsPids(h.netns), 'SIGCONT');
    const restarted: string[] = [];
    if (h.etcdMember && (await memberPid(h)) === undefined) {
      const members = this.st.hosts.filter((x) => x.etcdMember);
      const pid = await startEtcdMember(h, members, `fdlab-${this.prefix}`, this.privateDirs(h));
      await waitMemberHealthy(h, pid, timeoutMs);
      restarted.push('etcd');
    }
    let pid = await daemonPid(h);
    if (pid === undefined) {
      pid = await startHostDaemon(h, this.st.etcdEndpoints, this.st.accel, this.privateDirs(h));
      restarted.push('daemon');
    }
    await waitDaemonReady(h, pid, timeoutMs);
    await this.recordFailure(name, null);
    return { host: name, restarted };
  }

  /**
   * Restarts only the daemon of host `name`, the way an upgrade or a crash of `flightdeck
   * serve` does: its VMs, vdisk processes and etcd member keep running and the new daemon
   * takes them over. SIGKILL (the default) is a crash; SIGTERM a clean stop.
   */
  async restartDaemon(
    name: string,
    opts: { signal?: 'SIGKILL' | 'SIGTERM'; readyTimeoutMs?: number } = {},
  ): Promise<{ host: string; oldPid: number | null; pid: number }> {
    requireRoot();
    const h = this.host(name);
    const old = await daemonPid(h);
    if (old !== undefined) {
      signal([old], opts.signal ?? 'SIGKILL');
      if ((await waitExited([old], 20_000)).length) {
        signal([old], 'SIGKILL');
        await waitExited([old], 5_000);
      }
    }
    const pid = await startHostDaemon(h, this.st.etcdEndpoints, this.st.accel, this.privateDirs(h));
    await waitDaemonReady(h, pid, opts.readyTimeoutMs ?? 60_000);
    return { host: name, oldPid: old ?? null, pid };
  }

  private recordFailure(name: string, mode: FailMode | null): Promise<void> {
    // Serialized within this process (hosts healed in parallel), and re-read each time:
    // another process may have failed or healed another host meanwhile.
    const next = this.stateWrites.then(async () => {
      const st = (await readState(this.prefix)) ?? this.st;
      if (mode) st.failures[name] = mode;
      else delete st.failures[name];
      await writeState(st);
      this.st = st;
    });
    this.stateWrites = next.catch(() => undefined);
    return next;
  }

  async status(): Promise<LabStatus> {
    const st = (await readState(this.prefix)) ?? this.st;
    this.st = st;
    const rows = await Promise.all(
      st.hosts.map(async (h): Promise<LabHostStatus> => {
        const ns = await netnsExists(h.netns);
        const pids = ns ? await netnsPids(h.netns) : [];
        const frozen = pids.length > 0 && (await Promise.all(pids.map(stopped))).every(Boolean);
        const cut = ns && (await isPartitioned(h.netns));
        const ep = await hostEndpoint(h);
        const health = ep ? await tryRequestJson(ep, 'GET', '/api/v1/health', 1500) : undefined;
        return {
          name: h.name,
          ip: h.ip,
          apiUrl: h.apiUrl,
          netns: ns,
          daemonPid: (await daemonPid(h)) ?? null,
          etcdPid: h.etcdMember ? ((await memberPid(h)) ?? null) : '-',
          api: health?.status === 200 ? 'up' : 'down',
          state: 'unknown',
          failure: st.failures[h.name] ?? (frozen ? 'freeze' : cut ? 'partition' : null),
          processes: pids.length,
        };
      }),
    );
    for (const r of rows.filter((x) => x.api === 'up')) {
      const list = await this.hostList(r.name).catch(() => undefined);
      if (!list) continue;
      const states = new Map(list.map((x) => [x.name, x.state]));
      for (const row of rows) row.state = states.get(row.name) ?? 'unknown';
      break;
    }
    const members = await this.etcdMembers().catch(() => undefined);
    return {
      prefix: st.prefix,
      subnet: st.subnet,
      etcdEndpoints: st.etcdEndpoints,
      etcdMembers: members ? members.map((m) => m.name) : null,
      hosts: rows,
    };
  }
}

/** SIGSTOPs every process in the namespace until no running one is left (one may fork meanwhile). */
async function freezeNetns(netns: string): Promise<number> {
  const frozen = new Set<number>();
  for (let round = 0; round < 20; round++) {
    const pids = await netnsPids(netns);
    const fresh = pids.filter((p) => !frozen.has(p));
    if (fresh.length === 0) return frozen.size;
    signal(fresh, 'SIGSTOP');
    for (const p of fresh) frozen.add(p);
    await sleep(20);
  }
  return frozen.size;
}
