/**
 * `flightdeck lab up|down|status|exec|fail|heal|list`: a cluster of N hosts on this machine,
 * one network namespace each, for trying clustering and for multi-host tests. The work is in
 * src/lab; these handlers parse options, return data, and render it for people.
 */
import { FdError } from '../../core/errors.js';
import { DEFAULT_PREFIX } from '../../lab/names.js';
import { FAIL_MODES, Lab, type DownReport, type FailMode, type LabStatus } from '../../lab/lab.js';
import {
  argString,
  defineCommand,
  optBool,
  optString,
  type CliContext,
  type CommandDef,
  type ParsedInput,
} from '../command.js';
import { table } from '../render.js';

const prefixOption = {
  prefix: {
    type: 'string',
    description: `which lab (default: FLIGHTDECK_LAB_PREFIX or "${DEFAULT_PREFIX}")`,
    value: 'NAME',
  },
} as const;

function argList(input: ParsedInput, name: string): string[] {
  const v = input.args[name];
  return Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
}

function prefixOf(ctx: CliContext, input: ParsedInput): string {
  return optString(input, 'prefix') ?? ctx.env['FLIGHTDECK_LAB_PREFIX'] ?? DEFAULT_PREFIX;
}

const prefixFlag = (prefix: string): string => (prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`);

interface UpResult {
  prefix: string;
  subnet: string;
  etcdEndpoints: string[];
  hosts: { name: string; ip: string; apiUrl: string; dataDir: string; netns: string; token: string; etcd: boolean }[];
}

const up = defineCommand<UpResult>({
  noun: 'lab',
  verb: 'up',
  summary: 'build N hosts on this machine (namespaces, 3-member etcd, a daemon each)',
  options: {
    hosts: { type: 'string', description: 'how many hosts (1-64; etcd runs on the first 3)', value: 'N' },
    ...prefixOption,
    subnet: { type: 'string', description: 'lab network (default: first free 10.77.N.0/24)', value: 'A.B.C.0/24' },
    force: { type: 'boolean', description: 'tear down an existing lab of this prefix first' },
    'keep-on-failure': { type: 'boolean', description: 'leave a failed lab in place to read its logs' },
    'isolate-dirs': { type: 'boolean', description: "hide other hosts' data dirs from each host's processes" },
  },
  async run(ctx, input) {
    const hostsText = optString(input, 'hosts');
    if (hostsText === undefined || !/^\d+$/.test(hostsText)) {
      throw new FdError(
        'FD_LAB_BAD_HOSTS',
        `--hosts needs a number of hosts${hostsText ? `, not "${hostsText}"` : ''}`,
        {
          hint: 'e.g. flightdeck lab up --hosts 3',
        },
      );
    }
    const subnet = optString(input, 'subnet');
    const lab = await Lab.up({
      hosts: Number(hostsText),
      prefix: prefixOf(ctx, input),
      ...(subnet ? { subnet } : {}),
      force: optBool(input, 'force'),
      keepOnFailure: optBool(input, 'keep-on-failure'),
      isolateDirs: optBool(input, 'isolate-dirs'),
      onStep: (m) => ctx.say(m),
      signal: ctx.signal,
    });
    return {
      prefix: lab.prefix,
      subnet: lab.subnet,
      etcdEndpoints: [...lab.etcdEndpoints],
      hosts: lab.hosts.map((h) => ({
        name: h.name,
        ip: h.ip,
        apiUrl: h.apiUrl,
        dataDir: h.dataDir,
        netns: h.netns,
        token: h.token,
        etcd: h.etcdMember !== null,
      })),
    };
  },
  render(r) {
    const h1 = r.hosts[0]!;
    const p = prefixFlag(r.prefix);
    return [
      table(
        r.hosts.map((h) => ({ ...h, etcd: h.etcd ? 'member' : 'client' })),
        ['name', 'ip', 'apiUrl', 'etcd', 'dataDir'],
      ),
      '',
      `etcd: ${r.etcdEndpoints.join(',')}`,
      'try:',
      `  flightdeck host list --data-dir ${h1.dataDir}`,
      `  flightdeck lab exec${p} ${h1.name} -- flightdeck vm list`,
      `  flightdeck lab fail${p} ${r.hosts[r.hosts.length - 1]!.name} --mode partition   # then: lab heal`,
      `  flightdeck lab status${p}`,
      `  flightdeck lab down${p}`,
    ].join('\n');
  },
});

const down = defineCommand<DownReport>({
  noun: 'lab',
  verb: 'down',
  summary: 'remove a lab: processes, namespaces, links, bridge, nft rules, data dirs',
  options: { ...prefixOption },
  run: (ctx, input) => Lab.destroy(prefixOf(ctx, input), (m) => ctx.say(m)),
  render: (r) =>
    r.killed + r.namespaces.length + r.links.length === 0 && !r.dataDir
      ? `no lab "${r.prefix}" on this machine; nothing to remove`
      : `lab "${r.prefix}" removed: ${r.killed} processes, ${r.namespaces.length} namespaces, ` +
        `${r.links.length} links` +
        (r.dataDir ? `, ${r.dataDir}` : ''),
});

const status = defineCommand<LabStatus>({
  noun: 'lab',
  verb: 'status',
  summary: "a lab's hosts: processes, API, state in the cluster, injected faults",
  options: { ...prefixOption },
  run: async (ctx, input) => (await Lab.load(prefixOf(ctx, input))).status(),
  render: (s) =>
    [
      `lab "${s.prefix}" on ${s.subnet}; etcd members: ${s.etcdMembers ? s.etcdMembers.join(', ') : 'none answers'}`,
      table(
        s.hosts.map((h) => ({ ...h, failure: h.failure ?? '-' })),
        ['name', 'ip', 'state', 'api', 'daemonPid', 'etcdPid', 'processes', 'failure', 'apiUrl'],
      ),
    ].join('\n'),
});

const exec = defineCommand<{ code: number }>({
  noun: 'lab',
  verb: 'exec',
  summary: 'run a command inside a lab host (FLIGHTDECK_DATA_DIR set to its data dir)',
  args: [{ name: 'host', description: 'lab host, e.g. h1', required: true }],
  options: { ...prefixOption },
  passthrough: true,
  async run(ctx, input) {
    const lab = await Lab.load(prefixOf(ctx, input));
    if (input.rest.length === 0) {
      throw new FdError('FD_CLI_BAD_ARGS', 'lab exec needs a command after --', {
        hint: 'e.g. flightdeck lab exec h1 -- flightdeck vm list',
      });
    }
    const r = await lab.exec(argString(input, 'host'), input.rest, { stdio: 'inherit' });
    // The command's own output is the output, and its exit code ours. Exit here: the edge
    // would otherwise print a rendering, e.g. "null" when the command itself had --json.
    process.exit(r.code);
  },
});

const fail = defineCommand<{ host: string; mode: FailMode; processes: number }[]>({
  noun: 'lab',
  verb: 'fail',
  summary: 'inject a fault into lab hosts: kill their processes, partition them, or freeze them',
  args: [{ name: 'hosts', description: 'lab hosts, e.g. h3', required: true, variadic: true }],
  options: {
    mode: { type: 'string', description: `${FAIL_MODES.join(' | ')} (default kill)`, value: 'MODE' },
    ...prefixOption,
  },
  async run(ctx, input) {
    const mode = optString(input, 'mode') ?? 'kill';
    if (!(FAIL_MODES as readonly string[]).includes(mode)) {
      throw new FdError('FD_LAB_BAD_MODE', `--mode must be one of ${FAIL_MODES.join(', ')}, not "${mode}"`, {
        hint: 'kill: SIGKILL its processes; partition: cut its link; freeze: SIGSTOP its processes',
      });
    }
    const lab = await Lab.load(prefixOf(ctx, input));
    const names = argList(input, 'hosts');
    for (const n of names) lab.host(n); // every name checked before any host is touched
    return Promise.all(names.map((n) => lab.fail(n, mode as FailMode)));
  },
  render: (rs) =>
    rs
      .map((r) => `${r.host}: ${r.mode} (${r.processes} processes); undo with "flightdeck lab heal ${r.host}"`)
      .join('\n'),
});

const heal = defineCommand<{ host: string; restarted: string[] }[]>({
  noun: 'lab',
  verb: 'heal',
  summary: 'undo faults: reconnect, resume, and restart what was killed on lab hosts',
  args: [
    {
      name: 'hosts',
      description: 'lab hosts, e.g. h3 (several at once when quorum needs them)',
      required: true,
      variadic: true,
    },
  ],
  options: { ...prefixOption },
  async run(ctx, input) {
    const lab = await Lab.load(prefixOf(ctx, input));
    const names = argList(input, 'hosts');
    for (const n of names) lab.host(n);
    // In parallel: two killed etcd members of three only become healthy together.
    return Promise.all(names.map((n) => lab.heal(n)));
  },
  render: (rs) =>
    rs.map((r) => `${r.host} healed${r.restarted.length ? ` (restarted ${r.restarted.join(', ')})` : ''}`).join('\n'),
});

const list = defineCommand<{ prefix: string; hosts: number | null; subnet: string | null }[]>({
  noun: 'lab',
  verb: 'list',
  summary: 'labs on this machine',
  async run() {
    return Promise.all(
      (await Lab.list()).map(async (prefix) => {
        const lab = await Lab.load(prefix).catch(() => undefined);
        return { prefix, hosts: lab ? lab.hosts.length : null, subnet: lab ? lab.subnet : null };
      }),
    );
  },
});

export const labCommands: CommandDef[] = [up, down, status, exec, fail, heal, list] as CommandDef[];
