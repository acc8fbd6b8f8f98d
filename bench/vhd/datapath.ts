/**
 * The vdisk data path against its peers, measured in the same run on the same kind of VHD:
 *   ours      the vdisk process (dist/src/host/vdisk-main.js, as a VM gets it) on a unix socket
 *   qemu-nbd  `qemu-nbd -f vpc` serving the same file (the peer: goal >= 1.0x)
 *   vpc       QEMU's vpc driver opening the file in qemu-img itself (no NBD hop; reported as a ratio)
 * Workloads via `qemu-img bench` at queue depth 16:
 *   fresh image (what a new VM's disk is; a new dynamic VHD for every run):
 *     4k-seq-alloc-write   4 KiB sequential writes, each 2 MiB block allocated as they go
 *     64k-hole-read        64 KiB sequential reads of a disk nobody wrote
 *   filled image (every block allocated):
 *     4k-scattered-read/-write  4 KiB with a 1 MiB + 4 KiB stride (qemu-img bench has no random
 *                               mode; the stride defeats readahead and hits a new block each time)
 *     64k-seq-read/-write
 * TLS cost (qemu-img bench cannot take a tls-creds object, so libnbd's nbdcopy drives these):
 * 64 KiB requests, 16 in flight, one connection, to the vdisk process on TCP (the mirror's
 * transport) with and without NBD_OPT_STARTTLS + client certificates; ratio tls / tcp.
 *
 * Usage: node dist/bench/vhd/datapath.js [--size-mib N] [--rounds N] [--out FILE]
 * Each workload runs `rounds` times per target in rotating order; the median counts (the load
 * average before and after is in the JSON: the machines are shared). Writes
 * bench/results/vhd-datapath.json by default.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, createConnection } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run, waitFor } from '../../src/core/process.js';
import { startVdisk, stopVdisk } from '../../src/host/vdisk-process.js';
import { makeTestCa, type TestCa } from '../../test/nbd/tls-ca.js';

interface Workload {
  name: string;
  fresh: boolean;
  write: boolean;
  bufBytes: number;
  stepBytes: number;
  count: number;
  targets: Target[];
}

type Target = 'ours' | 'qemu-nbd' | 'vpc' | 'ours-tcp' | 'ours-tls';

const KiB = 1024;
const MiB = 1024 * KiB;

const { values } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '1024' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench/results/vhd-datapath.json' },
  },
});
const sizeBytes = Number(values['size-mib']) * MiB;
const rounds = Number(values.rounds);

const workloads: Workload[] = [
  {
    name: '4k-seq-alloc-write',
    fresh: true,
    write: true,
    bufBytes: 4 * KiB,
    stepBytes: 4 * KiB,
    count: 50000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
  {
    name: '64k-hole-read',
    fresh: true,
    write: false,
    bufBytes: 64 * KiB,
    stepBytes: 64 * KiB,
    count: 16000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
  {
    name: '4k-scattered-read',
    fresh: false,
    write: false,
    bufBytes: 4 * KiB,
    stepBytes: MiB + 4 * KiB,
    count: 40000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
  {
    name: '4k-scattered-write',
    fresh: false,
    write: true,
    bufBytes: 4 * KiB,
    stepBytes: MiB + 4 * KiB,
    count: 20000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
  {
    name: '64k-seq-read',
    fresh: false,
    write: false,
    bufBytes: 64 * KiB,
    stepBytes: 64 * KiB,
    count: 8000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
  {
    name: '64k-seq-write',
    fresh: false,
    write: true,
    bufBytes: 64 * KiB,
    stepBytes: 64 * KiB,
    count: 8000,
    targets: ['ours', 'qemu-nbd', 'vpc'],
  },
];

/** Sequential runs stop at the end of the disk: qemu-img bench fails a request that crosses it. */
function countOf(w: Workload): number {
  return w.stepBytes === w.bufBytes ? Math.min(w.count, Math.floor(sizeBytes / w.bufBytes)) : w.count;
}

interface Attach {
  /** qemu-img arguments that name the image (format or --image-opts). */
  image: string[];
  /** NBD URI for libnbd tools (TCP targets). */
  uri?: string;
}

async function bench(w: Workload, a: Attach): Promise<number> {
  const args = ['bench', '-q', '-d', '16', '-c', String(countOf(w)), '-s', String(w.bufBytes)];
  args.push('-S', String(w.stepBytes), ...(w.write ? ['-w', '--pattern=90'] : []), ...a.image);
  const t0 = process.hrtime.bigint();
  const res = await run('qemu-img', args);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const m = /Run completed in ([\d.]+) seconds/.exec(res.stdout);
  return m ? Number(m[1]) : wall;
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

async function withTarget<T>(t: Target, vhd: string, dir: string, ca: TestCa, fn: (a: Attach) => Promise<T>) {
  const sock = join(dir, `${t}.sock`);
  if (t === 'vpc') return fn({ image: ['-f', 'vpc', vhd] });
  if (t === 'qemu-nbd') {
    const child: ChildProcess = spawn('qemu-nbd', ['-f', 'vpc', '-k', sock, '-t', '-e', '4', vhd], { stdio: 'ignore' });
    try {
      await waitFor('qemu-nbd socket', async () => ((await canConnect(sock)) ? true : undefined), {
        timeoutMs: 10_000,
      });
      return await fn({ image: ['-f', 'raw', `nbd+unix:///?socket=${sock}`] });
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      await rm(sock, { force: true });
    }
  }
  const port = t === 'ours' ? 0 : await freePort();
  const id = await startVdisk({
    exports: [
      {
        image: vhd,
        socketPath: sock,
        exportName: 'bench',
        readOnly: false,
        ...(t === 'ours' ? {} : { tcp: { host: '127.0.0.1', port } }),
        ...(t === 'ours-tls' ? { tls: ca.server } : {}),
      },
    ],
    configPath: join(dir, 'vdisk.json'),
    logPath: join(dir, 'vdisk.log'),
  });
  try {
    if (t === 'ours') return await fn({ image: ['-f', 'raw', `nbd+unix:///bench?socket=${sock}`] });
    const opts = `driver=nbd,server.type=inet,server.host=localhost,server.port=${port},export=bench`;
    if (t === 'ours-tcp') return await fn({ image: ['--image-opts', opts], uri: `nbd://localhost:${port}/bench` });
    return await fn({
      image: [],
      uri: `nbds://localhost:${port}/bench?tls-certificates=${ca.clientDir}`,
    });
  } finally {
    await stopVdisk(id);
  }
}

async function createRaw(path: string, bytes: number): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', 'raw', path, String(bytes)]);
}

async function createImage(path: string): Promise<void> {
  await rm(path, { force: true });
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'vpc',
    '-o',
    'subformat=dynamic,force_size=on',
    path,
    String(sizeBytes),
  ]);
}

interface PerTarget {
  seconds: number[];
  median: number;
  iops: number;
  mibPerS: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dir = await mkdtemp(join(tmpdir(), 'fd-bench-datapath-'));
const loadBefore = loadavg();
try {
  const ca = await makeTestCa(await mkdtemp(join(dir, 'ca-')));
  const filled = join(dir, 'filled.vhd');
  await createImage(filled);
  // Filled so reads hit allocated blocks and writes overwrite instead of allocating.
  await run('qemu-io', ['-f', 'vpc', '-c', `write -P 0x5a 0 ${sizeBytes}`, filled]);
  const fresh = join(dir, 'fresh.vhd');

  const results: Record<string, Partial<Record<Target, PerTarget>>> = {};
  for (const w of workloads) {
    const per: Partial<Record<Target, PerTarget>> = {};
    for (const t of w.targets) per[t] = { seconds: [], median: 0, iops: 0, mibPerS: 0 };
    for (let r = 0; r < rounds; r++) {
      // Rotate who goes first: the machine is shared, and the page cache warms up as we go.
      const order = [...w.targets.slice(r % w.targets.length), ...w.targets.slice(0, r % w.targets.length)];
      for (const t of order) {
        if (w.fresh) await createImage(fresh);
        per[t]!.seconds.push(await withTarget(t, w.fresh ? fresh : filled, dir, ca, (a) => bench(w, a)));
      }
    }
    for (const t of w.targets) {
      const p = per[t]!;
      p.median = median(p.seconds);
      p.iops = Math.round(countOf(w) / p.median);
      p.mibPerS = Math.round(((countOf(w) * w.bufBytes) / MiB / p.median) * 10) / 10;
    }
    results[w.name] = per;
    const ratio = (a?: PerTarget, b?: PerTarget) => (a && b ? (a.iops / b.iops).toFixed(2) : '-');
    process.stdout.write(
      `${w.name.padEnd(20)} ours ${String(per.ours!.iops).padStart(7)} IOPS ${String(per.ours!.mibPerS).padStart(7)} MiB/s | ` +
        `qemu-nbd ${String(per['qemu-nbd']!.iops).padStart(7)} | vpc ${String(per.vpc!.iops).padStart(7)} | ` +
        `ours/qemu-nbd ${ratio(per.ours, per['qemu-nbd'])}  ours/vpc ${ratio(per.ours, per.vpc)}` +
        (per['ours-tls'] ? `  tls/tcp ${ratio(per['ours-tls'], per['ours-tcp'])}` : '') +
        '\n',
    );
  }
  // What TLS costs on the mirror's transport, driven by nbdcopy (it speaks TLS with certificates).
  const src = join(dir, 'src.raw');
  const tlsBytes = Math.min(sizeBytes, 256 * MiB);
  await run('qemu-io', ['-f', 'raw', '-c', `write -P 0x3c 0 ${tlsBytes}`, (await createRaw(src, tlsBytes), src)]);
  const tlsCost: Record<
    string,
    { tcpS: number[]; tlsS: number[]; tcpMibPerS: number; tlsMibPerS: number; tlsVsTcp: number }
  > = {};
  for (const kind of ['64k-write', '64k-read'] as const) {
    const secs: Record<'ours-tcp' | 'ours-tls', number[]> = { 'ours-tcp': [], 'ours-tls': [] };
    for (let r = 0; r < rounds; r++) {
      for (const t of r % 2 ? (['ours-tls', 'ours-tcp'] as const) : (['ours-tcp', 'ours-tls'] as const)) {
        secs[t].push(
          await withTarget(t, filled, dir, ca, async (a) => {
            const common = ['--connections=1', '--requests=16', '--request-size=65536'];
            const args = kind === '64k-write' ? [...common, '--sparse=0', src, a.uri!] : [...common, a.uri!, 'null:'];
            const t0 = process.hrtime.bigint();
            await run('nbdcopy', args);
            return Number(process.hrtime.bigint() - t0) / 1e9;
          }),
        );
      }
    }
    const mib = tlsBytes / MiB;
    const tcp = median(secs['ours-tcp']);
    const tls = median(secs['ours-tls']);
    tlsCost[kind] = {
      tcpS: secs['ours-tcp'],
      tlsS: secs['ours-tls'],
      tcpMibPerS: Math.round((mib / tcp) * 10) / 10,
      tlsMibPerS: Math.round((mib / tls) * 10) / 10,
      tlsVsTcp: tcp / tls,
    };
    process.stdout.write(
      `tls ${kind.padEnd(16)} tcp ${tlsCost[kind].tcpMibPerS} MiB/s | tls ${tlsCost[kind].tlsMibPerS} MiB/s | tls/tcp ${tlsCost[kind].tlsVsTcp.toFixed(2)}\n`,
    );
  }
  const summary = Object.fromEntries(
    Object.entries(results).map(([k, v]) => [
      k,
      {
        oursVsQemuNbd: v.ours!.iops / v['qemu-nbd']!.iops,
        oursVsVpc: v.ours!.iops / v.vpc!.iops,
        ...(v['ours-tls'] && v['ours-tcp'] ? { tlsVsTcp: v['ours-tls'].iops / v['ours-tcp'].iops } : {}),
      },
    ]),
  );
  const out = resolve(values.out!);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(
    out,
    JSON.stringify(
      {
        bench: 'vhd-datapath',
        date: new Date().toISOString(),
        command: `node dist/bench/vhd/datapath.js --size-mib ${values['size-mib']} --rounds ${rounds}`,
        loadavgBefore: loadBefore,
        loadavgAfter: loadavg(),
        sizeBytes,
        queueDepth: 16,
        rounds,
        statistic: 'median',
        workloads,
        results,
        tlsCost,
        summary,
      },
      null,
      2,
    ) + '\n',
  );
  process.stdout.write(
    `load average before ${loadBefore.map((x) => x.toFixed(1)).join(' ')}, after ${loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}\nresults: ${out}\n`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
