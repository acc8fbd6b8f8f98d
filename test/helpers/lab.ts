/** The real CLI pointed at one lab host's data dir (its daemon, over TLS with its certificate). */
import { spawn } from 'node:child_process';
import type { Lab } from '../../src/cluster/lab/lab.js';
import { CLI, type CliResult } from './daemon.js';

export function labCli(lab: Lab, host: string, args: string[]): Promise<CliResult> {
  const h = lab.state.hosts.find((x) => x.name === host)!;
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args, '--data-dir', h.dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    c.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** labCli with --json; throws with the CLI's output when it exits non-zero. */
export async function labJson<T>(lab: Lab, host: string, args: string[]): Promise<T> {
  const r = await labCli(lab, host, [...args, '--json']);
  if (r.code !== 0) throw new Error(`${host}: flightdeck ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
