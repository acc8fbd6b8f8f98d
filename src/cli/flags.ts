/** Command-line flag spelling shared by every command. */

/**
 * Flags are plain (`--start`); scripts written as `--start true` / `--force=false` keep working:
 * a literal true/false right after a boolean option is its value.
 */
export function foldFlagValues(args: string[], options: Record<string, { type: string; short?: string }>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    const isFlag = m && options[m[1]!]?.type === 'boolean';
    const value = isFlag
      ? (m[2] ?? (args[i + 1] === 'true' || args[i + 1] === 'false' ? args[++i] : 'true'))
      : undefined;
    if (isFlag && value !== 'true' && value !== 'false') {
      out.push(a); // --flag=other: parseArgs reports it
      continue;
    }
    if (!isFlag) out.push(a);
    else if (value === 'true') out.push(`--${m[1]}`);
  }
  return out;
}
