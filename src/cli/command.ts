/**
 * A CLI command declared as data: noun, verb, arguments, options and a handler that returns
 * data. The edge (main.ts) parses argv, runs the handler and prints the result as a table for
 * people or JSON with --json. API operations produce these from their one definition.
 */
import type { ProgressListener } from '../core/progress.js';

export interface ArgSpec {
  name: string;
  description: string;
  required?: boolean;
  variadic?: boolean;
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  description: string;
  short?: string;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. SIZE. */
  value?: string;
}

export interface CliContext {
  json: boolean;
  /** Progress reporter for long work: a bar on a terminal, nothing under --json. */
  progress(label: string): ProgressListener;
  /** Prints a line for people (suppressed under --json). */
  say(line: string): void;
  env: NodeJS.ProcessEnv;
  /** Global options as given (data dir, url, token). */
  global: { dataDir?: string; url?: string; token?: string };
  signal: AbortSignal;
}

export type ParsedInput = {
  args: Record<string, string | string[] | undefined>;
  opts: Record<string, string | boolean | string[] | undefined>;
};

export interface CommandDef<R = unknown> {
  noun: string;
  verb: string;
  summary: string;
  args?: ArgSpec[];
  options?: Record<string, OptionSpec>;
  /** Lets a command take everything after `--` verbatim (lab exec). */
  passthrough?: boolean;
  run(ctx: CliContext, input: ParsedInput & { rest: string[] }): Promise<R>;
  /** Human rendering; defaults to a table for arrays and key/value lines for objects. */
  render?(result: R): string;
  /** Exit code from the result (e.g. 1 when `disk check` found problems). */
  exitCode?(result: R): number;
}

export function defineCommand<R>(def: CommandDef<R>): CommandDef<R> {
  return def;
}

export function optString(input: ParsedInput, name: string): string | undefined {
  const v = input.opts[name];
  return typeof v === 'string' ? v : undefined;
}

export function optBool(input: ParsedInput, name: string): boolean {
  return input.opts[name] === true;
}

export function argString(input: ParsedInput, name: string): string {
  const v = input.args[name];
  if (typeof v !== 'string') throw new Error(`argument ${name} missing after parsing`);
  return v;
}
