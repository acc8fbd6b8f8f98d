import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectAccel, probeBootSector, probeLinuxKernel } from './accel.js';
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

// the tiny image's kernel, when it is cached here (the qemu layer cannot ask src/host for it)
const cachedKernel = join(
  process.env['FLIGHTDECK_IMAGE_CACHE'] || '/var/cache/flightdeck/images',
  'tiny/latest/vmlinuz',
);

test('this host (KVM hangs Linux guests) is judged TCG, and the verdict is cached', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'fd-accel-'));
  try {
    const kernel = existsSync(cachedKernel) ? cachedKernel : undefined;
    const v = await detectAccel({ dataDir, env: {}, timeoutMs: 3000, ...(kernel ? { kernelPath: kernel } : {}) });
    assert.equal(v.accel, 'tcg', v.reason);
    if (kernel) {
      // the probe got as far as a real Linux boot under KVM, and that boot hung
      assert.match(v.reason, /did not print its banner under KVM|boot-sector probe/);
      assert.equal(await probeLinuxKernel('tcg', kernel, 20_000), true, 'the same kernel boots under TCG');
    }
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
