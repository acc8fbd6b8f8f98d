/** The real CLI pointed at one lab host's data dir (its daemon, over TLS with its certificate). */
import { spawn } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import type { Lab } from '../../src/lab/lab.js';
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

/** Lab hosts that run a QEMU for VM `id` right now (found by the run dir on its command line). */
export async function labQemuHosts(lab: Lab, id: string): Promise<string[]> {
  const out: string[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const comm = await readFile(`/proc/${p}/comm`, 'utf8').catch(() => '');
    if (!comm.startsWith('qemu-system')) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    const h = lab.state.hosts.find((x) => cmd.includes(`${x.dataDir}/run/${id}/`));
    if (h) out.push(h.name);
  }
  return out.sort();
}

/** The probe lines the tiny guest of VM `id` printed on `host` (its serial log there). */
export async function labSerial(lab: Lab, host: string, id: string): Promise<string[]> {
  const h = lab.state.hosts.find((x) => x.name === host)!;
  const text = await readFile(`${h.dataDir}/run/${id}/q/serial.log`, 'latin1').catch(() => '');
  return text.split(/\r?\n/);
}

/** Last value of a probe line `TAG n` (FD-COUNTER, FD-HB, FD-COUNTER-START) in those lines. */
export function lastProbe(lines: string[], tag: string): bigint | null {
  let last: bigint | null = null;
  const re = new RegExp(`^${tag} (\\d+)`);
  for (const l of lines) {
    const m = re.exec(l.replace(/^[^F]*(?=FD-)/, ''));
    if (m) last = BigInt(m[1]!);
  }
  return last;
}
