/**
 * A cluster network spans the lab's hosts (VXLAN + a bridge on each): a guest keeps its
 * address across live migrations, and a TCP connection to its echo service, held open by a
 * client on another host for the whole time, survives h1 -> h2 -> h1 with every byte echoed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Lab } from '../../src/lab/lab.js';
import type { CliResult } from '../helpers/daemon.js';
import { labCli, labJson } from '../helpers/lab.js';
import { waitFor } from '../../src/core/process.js';
import { parseProbeLine } from '../../src/host/images/probes.js';

const PREFIX = `ln${process.pid % 10000}`;
let lab: Lab;

const cli = (host: string, args: string[]): Promise<CliResult> => labCli(lab, host, args);
const json = <T>(host: string, args: string[]): Promise<T> => labJson<T>(lab, host, args);

// Runs inside another host's namespace: one connection, a numbered line every 20 ms, each
// echo checked; on SIGTERM prints what it saw.
const CLIENT = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
const s = net.connect(Number(port), ip);
let n = 0, got = 0, buf = '', maxRtt = 0, bad = 0, closed = false, err = null;
const sentAt = new Map();
s.on('connect', () => {
  setInterval(() => { sentAt.set(n, Date.now()); s.write('ping ' + (n++) + '\\n'); }, 20);
});
s.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    const k = Number(line.split(' ')[1]);
    if (line !== 'ping ' + got) bad++;
    maxRtt = Math.max(maxRtt, Date.now() - sentAt.get(k));
    got++;
  }
});
s.on('close', () => { closed = true; });
s.on('error', (e) => { err = String(e); });
process.on('SIGTERM', () => {
  setTimeout(() => { console.log(JSON.stringify({ sent: n, got, bad, maxRtt, closed, err })); process.exit(0); }, 500);
});
`;

before(async () => {
  lab = await Lab.up({ hosts: 3, prefix: PREFIX, force: true });
  assert.equal((await cli('h1', ['image', 'build', 'tiny', '--probes'])).code, 0);
});
after(async () => {
  await Lab.destroy(PREFIX);
});

test('a TCP connection from another host to a migrating guest stays open, every byte echoed', async () => {
  await json('h1', ['network', 'create', 'cnet', '--cidr', '10.99.0.0/24', '--vni', '4242']);
  await json('h1', [
    'vm',
    'create',
    'srv',
    '--image',
    'tiny',
    '--memory',
    '128M',
    '--network',
    'cnet',
    '--host',
    'h1',
    '--start',
    'true',
  ]);
  const vm = await json<{ nics: { ip: string }[] }>('h1', ['vm', 'show', 'srv']);
  const ip = vm.nics[0]!.ip;
  assert.match(ip, /^10\.99\.0\.\d+$/);
  await waitFor(
    `guest DHCP address ${ip}`,
    async () => {
      const logs = await json<{ serial: string[] }>('h1', ['vm', 'logs', 'srv', '--lines', '2000']);
      return logs.serial.map(parseProbeLine).some((e) => e?.kind === 'ip' && e.address === ip) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );

  const h3 = lab.state.hosts.find((h) => h.name === 'h3')!;
  const client = spawn('ip', ['netns', 'exec', h3.netns, process.execPath, '-e', CLIENT, ip, '7'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  client.stdout.on('data', (b: Buffer) => (out += b.toString()));
  await new Promise((r) => setTimeout(r, 2000));

  const there = await json<{ state: string; error: unknown }>('h1', ['vm', 'migrate', 'srv', '--to', 'h2']);
  assert.equal(there.state, 'succeeded', JSON.stringify(there.error));
  await new Promise((r) => setTimeout(r, 2000));
  const back = await json<{ state: string; error: unknown }>('h2', ['vm', 'migrate', 'srv', '--to', 'h1']);
  assert.equal(back.state, 'succeeded', JSON.stringify(back.error));
  await new Promise((r) => setTimeout(r, 2000));

  client.kill('SIGTERM');
  await new Promise((r) => client.once('close', r));
  const seen = JSON.parse(out) as {
    sent: number;
    got: number;
    bad: number;
    maxRtt: number;
    closed: boolean;
    err: string | null;
  };
  assert.equal(seen.err, null, `client error: ${seen.err}`);
  assert.equal(seen.closed, false, 'the connection stayed open');
  assert.equal(seen.bad, 0);
  assert.ok(seen.sent > 100 && seen.got >= seen.sent - 5, JSON.stringify(seen));
  assert.equal((await json<{ nics: { ip: string }[]; host: string }>('h2', ['vm', 'show', 'srv'])).nics[0]!.ip, ip);
  await json('h1', ['vm', 'delete', 'srv', '--force', 'true']);
  await json('h1', ['network', 'delete', 'cnet']);
});
