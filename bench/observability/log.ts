/**
 * Benchmark: the daemon's JSON log lines through pino (src/core/log.ts: redaction, request-id
 * mixin) against the hand-written JSON logger it replaced (JSON.stringify of the merged fields,
 * kept here as the peer), both writing whole lines to the same discarding sink, in one run and
 * interleaved rounds. Also the /metrics exposition of prom-client for 50 VMs' worth of series.
 * Prints lines per second, the ratio, and the load average.
 *
 *   npm run build && node dist/bench/observability/log.js [LINES]   (default 200000)
 */
import { loadavg } from 'node:os';
import { Counter, Gauge, Registry } from 'prom-client';
import { createLogger, logContext, redactFields, type Logger } from '../../src/core/log.js';

const LINES = Number(process.argv[2] ?? 200_000);
const ROUNDS = 3;

/** The logger flightdeck had before pino (its JSON branch), for comparison. */
function handWritten(write: (line: string) => void, base: Record<string, unknown>, same = false): Logger {
  // same: with what the pino logger adds (redaction, the request id), for a like-for-like peer
  const emit =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void =>
      write(
        JSON.stringify(
          same
            ? redactFields({ t: new Date().toISOString(), level, msg, ...base, ...logContext.getStore(), ...fields })
            : { t: new Date().toISOString(), level, msg, ...base, ...fields },
        ),
      );
  return {
    debug: () => undefined,
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    child: (f) => handWritten(write, { ...base, ...f }, same),
  };
}

function run(log: Logger): number {
  const t0 = process.hrtime.bigint();
  logContext.run({ reqId: 'c127f893-af0a-4e03-8f1c-374b2073cb54' }, () => {
    for (let i = 0; i < LINES; i++)
      log.info('vm started', { vm: '15e51d0c-bd1d-4bae-ae18-ef7d969a304f', pid: 3781 + i, accel: 'tcg' });
  });
  return LINES / (Number(process.hrtime.bigint() - t0) / 1e9);
}

let bytes = 0;
const sink = (line: string): void => {
  bytes += line.length;
};
const pinoLog = createLogger({ json: true, base: { svc: 'flightdeck' }, write: sink });
const oldLog = handWritten(sink, { svc: 'flightdeck' });
const likeLog = handWritten(sink, { svc: 'flightdeck' }, true);
const ours: number[] = [];
const peer: number[] = [];
const like: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  ours.push(run(pinoLog));
  peer.push(run(oldLog));
  like.push(run(likeLog));
}
const best = (xs: number[]): number => Math.max(...xs);
console.log(
  `log lines/s: pino ${Math.round(best(ours))}, hand-written ${Math.round(best(peer))} (ratio ${(best(ours) / best(peer)).toFixed(2)}), ` +
    `hand-written with the same redaction and request id ${Math.round(best(like))} (ratio ${(best(ours) / best(like)).toFixed(2)}); best of ${ROUNDS}, ${LINES} lines, ${bytes} bytes`,
);

// /metrics: prom-client's exposition of 50 VMs x 7 states + 7 counters, timed per scrape.
const reg = new Registry();
const state = new Gauge({ name: 'bench_vm_state', help: 'h', labelNames: ['vm', 'state'], registers: [reg] });
const counters = Array.from(
  { length: 7 },
  (_, i) => new Counter({ name: `bench_c${i}_total`, help: 'h', labelNames: ['vm'], registers: [reg] }),
);
for (let v = 0; v < 50; v++) {
  for (let s = 0; s < 7; s++) state.set({ vm: `vm${v}`, state: `s${s}` }, s === 0 ? 1 : 0);
  for (const c of counters) c.inc({ vm: `vm${v}` }, v);
}
const t0 = process.hrtime.bigint();
let size = 0;
for (let i = 0; i < 200; i++) size = (await reg.metrics()).length;
console.log(
  `metrics: ${(Number(process.hrtime.bigint() - t0) / 1e6 / 200).toFixed(3)} ms per scrape of ${size} bytes (prom-client)`,
);
console.log(
  `load average: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
