/**
 * The `flightdeck` command: finds the command for `noun verb`, parses its arguments, runs it and
 * prints the result. Every FdError prints the same way: what happened, how to fix it, the code.
 */
import { parseArgs } from 'node:util';
import { FdError } from '../core/errors.js';
import type { CliContext, CommandDef, ParsedInput } from './command.js';
import { allCommands } from './commands/index.js';
import { progressLine, renderDefault } from './render.js';
import { renderVersion, versionInfo } from './version.js';
import { foldFlagValues } from './flags.js';

const GLOBAL_OPTIONS = {
  json: { type: 'boolean', description: 'print JSON for scripts instead of tables' },
  'data-dir': { type: 'string', description: 'data dir of a local daemon (or FLIGHTDECK_DATA_DIR)', value: 'DIR' },
  url: { type: 'string', description: 'URL of a remote daemon (or FLIGHTDECK_URL)', value: 'URL' },
  token: { type: 'string', description: 'API token (or FLIGHTDECK_TOKEN)', value: 'TOKEN' },
  help: { type: 'boolean', short: 'h', description: 'show help' },
} as const;

function usage(commands: CommandDef[]): string {
  const nouns = new Map<string, CommandDef[]>();
  for (const c of commands) nouns.set(c.noun, [...(nouns.get(c.noun) ?? []), c]);
  const lines = ['usage: flightdeck NOUN VERB [ARGS] [--json]', ''];
  for (const [noun, cmds] of [...nouns].sort()) {
    for (const c of cmds) lines.push(`  ${`${noun} ${c.verb}`.padEnd(22)} ${c.summary}`);
  }
  lines.push('', 'global options: --json, --data-dir DIR, --url URL, --token TOKEN; flightdeck --version');
  return lines.join('\n');
}

function commandHelp(c: CommandDef): string {
  const args = (c.args ?? []).map(
    (a) => (a.required ? a.name.toUpperCase() : `[${a.name.toUpperCase()}]`) + (a.variadic ? '...' : ''),
  );
  const lines = [`usage: flightdeck ${c.noun} ${c.verb} ${args.join(' ')}`.trimEnd(), '', c.summary, ''];
  for (const a of c.args ?? []) lines.push(`  ${a.name.toUpperCase().padEnd(24)} ${a.description}`);
  for (const [name, o] of Object.entries({ ...c.options, ...GLOBAL_OPTIONS })) {
    const flag = `--${name}${o.type === 'string' ? ` ${'value' in o && o.value ? o.value : 'VALUE'}` : ''}`;
    lines.push(`  ${flag.padEnd(24)} ${o.description}`);
  }
  return lines.join('\n');
}

export function printError(err: unknown, json: boolean): void {
  if (err instanceof FdError) {
    if (json) process.stdout.write(JSON.stringify({ error: err.toJSON() }) + '\n');
    else {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
      process.stderr.write(`  code: ${err.code}\n`);
    }
  } else {
    process.stderr.write(`internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  }
}

/** Moves global options given before the noun (`--data-dir X vm list`) behind the verb. */
function hoistGlobals(argv: string[]): string[] {
  const lead: string[] = [];
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('--')) {
    const name = argv[i]!.slice(2).split('=')[0]!;
    const opt = (GLOBAL_OPTIONS as Record<string, { type: string }>)[name];
    if (!opt) break;
    const takesValue = opt.type === 'string' && !argv[i]!.includes('=');
    lead.push(...argv.slice(i, i + (takesValue ? 2 : 1)));
    i += takesValue ? 2 : 1;
  }
  if (!lead.length) return argv;
  const rest = argv.slice(i);
  const dd = rest.indexOf('--');
  const at = Math.min(dd < 0 ? rest.length : dd, rest.length);
  return [...rest.slice(0, at), ...lead, ...rest.slice(at)];
}

export async function main(rawArgv: string[]): Promise<number> {
  const commands = allCommands();
  const argv = hoistGlobals(rawArgv);
  const dashDash = argv.indexOf('--');
  const json = (dashDash < 0 ? argv : argv.slice(0, dashDash)).includes('--json');
  const [noun, verb, ...restAfterVerb] = argv;
  if (noun === '--version' || noun === '-V' || noun === 'version') {
    const v = versionInfo();
    process.stdout.write((json ? JSON.stringify(v, null, 2) : renderVersion(v)) + '\n');
    return 0;
  }
  if (!noun || noun === '--help' || noun === '-h' || noun === 'help') {
    process.stdout.write(usage(commands) + '\n');
    return noun ? 0 : 2;
  }
  let cmd = commands.find((c) => c.noun === noun && c.verb === verb);
  let rest = restAfterVerb;
  const bare = commands.find((c) => c.noun === noun && c.verb === '');
  if (!cmd && bare) {
    // A command with no verb (serve): everything after the noun is its arguments.
    cmd = bare;
    rest = verb === undefined ? [] : [verb, ...restAfterVerb];
  }
  if (!cmd) {
    const forNoun = commands.filter((c) => c.noun === noun);
    if (forNoun.length && (!verb || verb === '--help' || verb === '-h')) {
      process.stdout.write(usage(forNoun) + '\n');
      return verb ? 0 : 2;
    }
    printError(
      new FdError('FD_CLI_UNKNOWN_COMMAND', `unknown command "${[noun, verb].filter(Boolean).join(' ')}"`, {
        hint: 'run "flightdeck --help" for the list of commands',
      }),
      json,
    );
    return 2;
  }
  let passthrough: string[] = [];
  let own = rest;
  const dd = rest.indexOf('--');
  if (cmd.passthrough && dd >= 0) {
    own = rest.slice(0, dd);
    passthrough = rest.slice(dd + 1);
  }
  let parsed;
  try {
    const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
    for (const [k, o] of Object.entries({ ...GLOBAL_OPTIONS, ...cmd.options })) {
      options[k] = {
        type: o.type,
        ...('short' in o && o.short ? { short: o.short } : {}),
        ...('multiple' in o && o.multiple ? { multiple: true } : {}),
      };
    }
    parsed = parseArgs({ args: foldFlagValues(own, options), options, allowPositionals: true, strict: true });
  } catch (err) {
    printError(
      new FdError('FD_CLI_BAD_ARGS', (err as Error).message, { hint: `see "flightdeck ${noun} ${verb} --help"` }),
      json,
    );
    return 2;
  }
  if (parsed.values['help']) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return 0;
  }
  const input: ParsedInput & { rest: string[] } = {
    args: {},
    opts: parsed.values as ParsedInput['opts'],
    rest: passthrough,
  };
  const positionals = [...parsed.positionals];
  for (const a of cmd.args ?? []) {
    if (a.variadic) input.args[a.name] = positionals.splice(0);
    else input.args[a.name] = positionals.shift();
    const v = input.args[a.name];
    if (a.required && (v === undefined || (Array.isArray(v) && v.length === 0))) {
      printError(
        new FdError('FD_CLI_BAD_ARGS', `missing ${a.name.toUpperCase()}: ${a.description}`, {
          hint: `see "flightdeck ${noun} ${verb} --help"`,
        }),
        json,
      );
      return 2;
    }
  }
  if (positionals.length) {
    printError(
      new FdError('FD_CLI_BAD_ARGS', `unexpected argument "${positionals[0]}"`, {
        hint: `see "flightdeck ${noun} ${verb} --help"`,
      }),
      json,
    );
    return 2;
  }
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const tty = process.stderr.isTTY && !json;
  const ctx: CliContext = {
    json,
    say: (line) => {
      if (!json) process.stderr.write(line + '\n');
    },
    progress: (label) => {
      let last = 0;
      return (p) => {
        if (json) return;
        if (tty) {
          process.stderr.write('\r' + progressLine(label, p) + (p.done >= p.total ? '\n' : ''));
        } else if (Date.now() - last > 5000 || p.done >= p.total) {
          last = Date.now();
          process.stderr.write(progressLine(label, p) + '\n');
        }
      };
    },
    env: process.env,
    global: {
      dataDir: (parsed.values['data-dir'] as string | undefined) ?? process.env['FLIGHTDECK_DATA_DIR'],
      url: (parsed.values['url'] as string | undefined) ?? process.env['FLIGHTDECK_URL'],
      token: (parsed.values['token'] as string | undefined) ?? process.env['FLIGHTDECK_TOKEN'],
    },
    signal: abort.signal,
  };
  try {
    const result = await cmd.run(ctx, input);
    if (json) process.stdout.write(JSON.stringify(result ?? null, null, 2) + '\n');
    else {
      const text = cmd.render ? cmd.render(result) : renderDefault(result);
      if (text) process.stdout.write(text + '\n');
    }
    return cmd.exitCode ? cmd.exitCode(result) : 0;
  } catch (err) {
    printError(err, json);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
