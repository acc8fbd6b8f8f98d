/**
 * Structured logging to stderr as JSON lines (daemon) or plain text (CLI). Small on purpose:
 * the daemon's logs go to journald under systemd, which adds the timestamps people read.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export function createLogger(
  opts: { level?: Level; json?: boolean; base?: Record<string, unknown>; write?: (line: string) => void } = {},
): Logger {
  const envLevel = process.env['FLIGHTDECK_LOG'] as Level | undefined;
  const min = ORDER[opts.level ?? envLevel ?? 'info'] ?? ORDER.info;
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const base = opts.base ?? {};
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[level] < min) return;
    if (opts.json) {
      write(JSON.stringify({ t: new Date().toISOString(), level, msg, ...base, ...fields }));
    } else {
      const extra = { ...base, ...fields };
      const tail = Object.keys(extra).length ? ' ' + JSON.stringify(extra) : '';
      write(`${level}: ${msg}${tail}`);
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  };
}

export const silentLogger: Logger = createLogger({ level: 'error', write: () => undefined });
