import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
