/**
 * The guest's users, seen from another lab host: one TCP connection to the guest's echo
 * service, a numbered line every 20 ms, each echo checked and its round trip recorded. A
 * migration pauses the guest; the pings sent meanwhile come back late, so the longest round
 * trip over the migration is the pause as a client of the guest sees it (the guest's own clock
 * stalls with it and cannot show this).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { run, waitFor } from '../../src/core/process.js';
import { nowMs } from './heartbeats.js';

// Runs inside a lab host's namespace. Retries the connection until the guest answers; on
// SIGTERM prints every [sent at (epoch ms), round trip ms] and the counters as one JSON line.
const CLIENT = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
let s, timer, n = 0, got = 0, buf = '', bad = 0, closed = false, err = null, connected = false;
const sentAt = new Map();
const samples = [];
function connect() {
  s = net.connect(Number(port), ip);
  s.on('connect', () => {
    connected = true;
    console.log('connected');
    timer = setInterval(() => { sentAt.set(n, Date.now()); s.write('ping ' + (n++) + '\\n'); }, 20);
  });
  s.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 1);
      const k = Number(line.split(' ')[1]);
      if (line !== 'ping ' + got) bad++;
      const at = sentAt.get(k);
      if (at !== undefined) samples.push([at, Date.now() - at]);
      got++;
    }
  });
  s.on('close', () => { if (connected) closed = true; else setTimeout(connect, 200); });
  s.on('error', (e) => { if (connected) err = String(e); });
}
connect();
process.on('SIGTERM', () => {
  clearInterval(timer);
  setTimeout(() => { console.log(JSON.stringify({ sent: n, got, bad, closed, err, samples })); process.exit(0); }, 500);
});
`;

export interface EchoStats {
  sent: number;
  got: number;
  bad: number;
  closed: boolean;
  err: string | null;
  samples: [number, number][];
}

export class EchoProbe {
  private out = '';
  private child: ChildProcess | undefined;
  /** Date.now() - nowMs(): maps this process's monotonic times onto the client's epoch times. */
  private readonly epochOffset = Date.now() - nowMs();
  stats: EchoStats | undefined;

  constructor(
    private readonly netns: string,
    private readonly ip: string,
    private readonly port = 7,
  ) {}

  /** Starts the client and waits until its connection is open. */
  async start(): Promise<void> {
    this.out = '';
    this.stats = undefined;
    // An address reused from a deleted VM may still map to its old MAC here.
    await run('ip', ['-n', this.netns, 'neigh', 'flush', 'to', this.ip], { allowFail: true });
    const c = spawn('ip', ['netns', 'exec', this.netns, process.execPath, '-e', CLIENT, this.ip, String(this.port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = c;
    c.stdout!.on('data', (b: Buffer) => (this.out += b.toString()));
    await waitFor(
      `echo connection to ${this.ip}`,
      () => {
        if (c.exitCode !== null) throw new Error(`echo client exited: ${this.out}`);
        return this.out.includes('connected') ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 50 },
    );
  }

  /** start(), but a client that cannot connect leaves the case without echo figures (said on stderr). */
  async tryStart(): Promise<EchoProbe | undefined> {
    try {
      await this.start();
      return this;
    } catch (err) {
      this.close();
      process.stderr.write(`echo client: ${String(err)}; this case has no echo figures\n`);
      return undefined;
    }
  }

  async stop(): Promise<EchoStats> {
    const c = this.child!;
    const closed = new Promise((r) => c.once('close', r));
    c.kill('SIGTERM');
    await closed;
    const last = this.out.trim().split('\n').at(-1) ?? '';
    this.stats = JSON.parse(last) as EchoStats;
    return this.stats;
  }

  /** Ends a client still running (after a failed case); no stats. */
  close(): void {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  /** Longest round trip of the pings sent in [fromMs, toMs] (this process's nowMs() clock). */
  maxRtt(fromMs: number, toMs: number): number | null {
    const a = fromMs + this.epochOffset;
    const b = toMs + this.epochOffset;
    const xs = (this.stats?.samples ?? []).filter(([at]) => at >= a && at <= b).map(([, rtt]) => rtt);
    return xs.length ? Math.max(...xs) : null;
  }

  /** Pings sent but never echoed (a dropped connection or lost data shows here). */
  lost(): number {
    return this.stats ? this.stats.sent - this.stats.got : 0;
  }
}
