/**
 * Logging: our small Logger interface, so call sites stay as they are, over pino for the JSON
 * lines of the daemon, the vdisk processes and the fence keeper (levels, ISO timestamps,
 * credentials redacted), and plain text for the CLI. Under systemd the lines go to journald.
 *
 * A request's id rides along in `logContext` (AsyncLocalStorage): every line logged while the
 * API handles a request, and by the tasks it starts, carries `reqId` without passing it around.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** Fields every line logged in this async context carries (the API request id). */
export const logContext = new AsyncLocalStorage<Record<string, unknown>>();

/** Never written to a log: credentials, as a field or inside one (headers, a join request...). */
export const REDACTED_KEYS = new Set(['authorization', 'token', 'password', 'secret', 'cookie', 'set-cookie']);
const CENSOR = '[redacted]';
const MAX_DEPTH = 3;

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Error);
}

/**
 * The fields with every credential replaced, copying only what changes (callers' objects are
 * never touched). pino's own path redaction does this too, but its wildcard paths cost 7x the
 * time of a whole log line (bench/observability/log.ts); a walk of the few fields a line has
 * costs next to nothing.
 */
export function redactFields(obj: Record<string, unknown>, depth = 0): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(obj)) {
    const v = obj[k];
    let nv = v;
    if (REDACTED_KEYS.has(k.toLowerCase())) nv = CENSOR;
    else if (depth < MAX_DEPTH && isPlain(v)) nv = redactFields(v, depth + 1);
    if (nv !== v) (out ??= { ...obj })[k] = nv;
  }
  return out ?? obj;
}

export interface LoggerOptions {
  level?: Level;
  json?: boolean;
  base?: Record<string, unknown>;
  /** Where lines go (one call per line, without the newline); stderr by default. */
  write?: (line: string) => void;
}

function levelOf(opts: LoggerOptions): Level {
  const env = process.env['FLIGHTDECK_LOG'] as Level | undefined;
  const l = opts.level ?? env ?? 'info';
  return l in ORDER ? l : 'info';
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return opts.json ? pinoLogger(opts) : textLogger(opts, opts.base ?? {});
}

function pinoLogger(opts: LoggerOptions): Logger {
  const write = opts.write;
  const dest: DestinationStream = write
    ? { write: (s: string) => write(s.endsWith('\n') ? s.slice(0, -1) : s) }
    : pino.destination({ fd: 2, sync: true });
  const root = pino(
    {
      level: levelOf(opts),
      base: opts.base ?? {},
      messageKey: 'msg',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: (o) => redactFields(o) },
      mixin: () => logContext.getStore() ?? {},
    },
    dest,
  );
  return wrap(root);
}

function wrap(p: PinoLogger): Logger {
  const at =
    (level: Level) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      if (fields) p[level](fields, msg);
      else p[level](msg);
    };
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (fields) => wrap(p.child(fields)),
  };
}

/** The CLI's lines for people: `level: message {fields}`. */
function textLogger(opts: LoggerOptions, base: Record<string, unknown>): Logger {
  const min = ORDER[levelOf(opts)];
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[level] < min) return;
    const extra = redactFields({ ...base, ...logContext.getStore(), ...fields });
    const tail = Object.keys(extra).length ? ' ' + JSON.stringify(extra) : '';
    write(`${level}: ${msg}${tail}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => textLogger(opts, { ...base, ...fields }),
  };
}

export const silentLogger: Logger = createLogger({ level: 'error', write: () => undefined });
