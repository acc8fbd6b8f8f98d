import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectAccel, probeBootSector } from './accel.js';
import { isFdError } from '../core/errors.js';

test('FLIGHTDECK_ACCEL forces the accelerator; a bad value is FD_ACCEL_INVALID', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-accel-'));
  try {
    const v = await detectAccel({ dataDir, env: { FLIGHTDECK_ACCEL: 'kvm' } });
    assert.equal(v.accel, 'kvm');
    assert.equal(v.forced, true);
    await assert.rejects(detectAccel({ dataDir, env: { FLIGHTDECK_ACCEL: 'hvf' } }), (e) =>
      isFdError(e, 'FD_ACCEL_INVALID'),
    );
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('the probe guest boots to long mode under TCG and reports on its serial port', async () => {
  assert.equal(await probeBootSector('tcg', 10_000), true);
});

test('this host (KVM hangs Linux guests) is judged TCG, and the verdict is cached', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-accel-'));
  try {
    const v = await detectAccel({ dataDir, env: {}, timeoutMs: 3000 });
    assert.equal(v.accel, 'tcg', v.reason);
    assert.equal(v.forced, false);
    if (existsSync(join(dataDir, 'accel.json'))) {
      const cached = JSON.parse(await readFile(join(dataDir, 'accel.json'), 'utf8')) as { probedAt: string };
      const again = await detectAccel({ dataDir, env: {} });
      assert.equal(again.probedAt, cached.probedAt, 'second call answers from the cache');
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
