import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { foldFlagValues } from './flags.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const cli = (args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });

test('global options work before the noun as well as after the verb', () => {
  for (const args of [
    ['--data-dir', '/nonexistent-fd', 'vm', 'list', '--json'],
    ['vm', 'list', '--data-dir', '/nonexistent-fd', '--json'],
    ['--json', '--data-dir=/nonexistent-fd', 'vm', 'list'],
  ]) {
    const r = cli(args);
    assert.equal(r.status, 1, args.join(' '));
    assert.equal(JSON.parse(r.stdout).error.code, 'FD_DAEMON_NOT_RUNNING', args.join(' '));
  }
});

test('an unknown command is exit 2 with FD_CLI_UNKNOWN_COMMAND', () => {
  const r = cli(['frobnicate', 'now']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /FD_CLI_UNKNOWN_COMMAND/);
});

test('--version names the version and the Node.js it runs on; --json too', () => {
  const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../../package.json', import.meta.url)), 'utf8'));
  const r = cli(['--version']);
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), `flightdeck ${pkg.version} (Node.js ${process.version})`);
  const j = cli(['--version', '--json']);
  assert.deepEqual(JSON.parse(j.stdout), { version: pkg.version, node: process.version });
});

test('flags are plain; a literal true/false after one is still read as its value', () => {
  const opts = { start: { type: 'boolean' }, memory: { type: 'string' } };
  assert.deepEqual(foldFlagValues(['web', '--start'], opts), ['web', '--start']);
  assert.deepEqual(foldFlagValues(['web', '--start', 'true', '--memory', '1G'], opts), [
    'web',
    '--start',
    '--memory',
    '1G',
  ]);
  assert.deepEqual(foldFlagValues(['web', '--start', 'false'], opts), ['web']);
  assert.deepEqual(foldFlagValues(['web', '--start=false'], opts), ['web']);
  assert.deepEqual(foldFlagValues(['--memory', 'true'], opts), ['--memory', 'true'], 'a string option keeps its value');
  assert.deepEqual(foldFlagValues(['--', '--start', 'true'], opts), ['--', '--start', 'true'], 'nothing after --');
});

test('vm create --start is a plain flag in the help', () => {
  const r = cli(['vm', 'create', '--help']);
  assert.equal(r.status, 0);
  assert.match(r.stdout, /^ {2}--start {2,}start it once created$/m);
  assert.match(cli(['vm', 'delete', '--help']).stdout, /^ {2}--force {2,}\S/m);
});
