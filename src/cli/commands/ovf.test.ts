import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ovfFixture } from '../../../test/ovf/helpers.js';
import type { CliContext, CommandDef } from '../command.js';
import { ovfCommands } from './ovf.js';

const ctx = {} as CliContext;
const cmd = (verb: string): CommandDef => ovfCommands.find((c) => c.verb === verb)!;

async function runVerb(verb: string, file: string, opts: Record<string, string | string[]> = {}) {
  const c = cmd(verb);
  const result = await c.run(ctx, { args: { file }, opts, rest: [] });
  return { result, text: c.render!(result), exit: c.exitCode ? c.exitCode(result) : 0 };
}

test('ovf validate exits 1 with one line per problem, and 0 with a one-line verdict', async () => {
  const bad = await runVerb('validate', ovfFixture('cot/invalid.ovf'));
  assert.equal(bad.exit, 1);
  const lines = bad.text.split('\n');
  assert.equal(lines.length, 5);
  assert.ok(
    lines.every((l) => /^FD_OVF_[A-Z_]+: /.test(l)),
    bad.text,
  );
  const good = await runVerb('validate', ovfFixture('cot/input.ovf'));
  assert.equal(good.exit, 0);
  assert.match(good.text, /valid \(OVF 1\.x, schema .*dsp8023_1\.1\.1\.xsd, manifest input\.mf verified; 4 files\)$/);
});

test('ovf inspect renders systems for people and honours --deployment and --prop', async () => {
  const r = await runVerb('inspect', ovfFixture('cot/csr1000v.ovf'), { deployment: '4CPU-8GB' });
  assert.match(r.text, /cpu: +4\n/);
  assert.match(r.text, /memory: +8\.00 GiB \(8589934592 bytes\)/);
  assert.match(r.text, /property: com\.cisco\.csr1000v\.hostname\.1 \(string, configurable\)/);
  const p = await runVerb('inspect', ovfFixture('govmomi/disk-capacity-property.ovf'), { prop: ['disksize=7'] });
  assert.match(p.text, /disk: +vmdisk_data 7\.00 GiB on scsi\/lsilogic:0 \(empty\)/);
  await assert.rejects(runVerb('inspect', ovfFixture('cot/minimal.ovf'), { prop: ['novalue'] }), /KEY=VALUE/);
});
