/**
 * Boots the real tiny image (built or taken from the cache) under TCG and checks each probe
 * the rest of the project relies on: heartbeat, durable counter, echo service, uptime, and
 * the counter surviving a SIGKILL of QEMU and a second boot.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { buildTinyImage, type TinyImage } from '../../src/host/images/tiny.js';
import { readCounterFromImage } from '../../src/host/images/vhd.js';
import { bootTiny, cleanup, echoRoundTrip, freePort, privateDisk, type Stamped } from './tiny-guest.js';

let image: TinyImage;
let dir: string;
let disk: string;

before(async () => {
  image = await buildTinyImage();
  ({ dir, disk } = await privateDisk(image));
});
after(async () => {
  if (dir) await cleanup(dir);
});

type Of<K extends Stamped['kind']> = Extract<Stamped, { kind: K }>;

test('tiny guest: heartbeat, durable counter and echo probes; counter survives SIGKILL and reboot', async () => {
  const port = await freePort();
  const guest = bootTiny(image, disk, { hostfwdPort: port });
  let lastPrinted: bigint;
  try {
    const ready = await guest.waitFor('ready');
    assert.ok(ready.uptimeS > 0, 'FD-READY reports the guest uptime');
    await guest.waitFor('ip', { where: (e) => e.address === '10.0.2.15' && e.dev === 'eth0' });

    // Echo service: bytes come back unchanged, over slirp's port forward to guest port 7.
    const payload = randomBytes(100_000);
    assert.deepEqual(await echoRoundTrip(port, payload), payload, 'echo service returns what it was sent');
    // Several connections at once (the echo serves each in its own process).
    const many = [randomBytes(5000), randomBytes(7000), randomBytes(9000)];
    assert.deepEqual(await Promise.all(many.map((p) => echoRoundTrip(port, p))), many, 'concurrent echo connections');

    // Heartbeat: 100 more ticks after READY, seq +1 each, monotonic timestamps increasing.
    const start = guest.events.findIndex((e) => e === ready);
    await guest.waitFor('heartbeat', { from: start, where: () => heartbeatsAfter(start) >= 100 });
    const hbs = guest.events.filter((e): e is Of<'heartbeat'> => e.kind === 'heartbeat');
    for (let i = 1; i < hbs.length; i++) {
      assert.equal(hbs[i]!.seq, hbs[i - 1]!.seq + 1, `heartbeat seq after ${hbs[i - 1]!.seq}`);
      assert.ok(hbs[i]!.monotonicNs > hbs[i - 1]!.monotonicNs, `heartbeat timestamp after seq ${hbs[i - 1]!.seq}`);
    }

    // Uptime ticks and grows.
    const up1 = await guest.waitFor('uptime', { from: start });
    const up2 = await guest.waitFor('uptime', { from: guest.events.indexOf(up1) + 1 });
    assert.ok(up2.uptimeS > up1.uptimeS, 'guest uptime increases');

    // Durable counter: starts from an empty disk and counts up by one.
    const counterStart = guest.events.find((e): e is Of<'counter-start'> => e.kind === 'counter-start');
    assert.equal(counterStart?.n, 0n, 'a fresh disk has no counter record');
    await guest.waitFor('counter', { where: (e) => e.n >= 20n });
    const counters = guest.events.filter((e): e is Of<'counter'> => e.kind === 'counter').map((e) => e.n);
    counters.forEach((n, i) => assert.equal(n, BigInt(i + 1), 'durable counter increments by one'));

    await guest.kill('SIGKILL');
    lastPrinted = guest.events.filter((e): e is Of<'counter'> => e.kind === 'counter').at(-1)!.n;
  } finally {
    await guest.kill();
  }

  const onDisk = await readCounterFromImage(disk);
  assert.ok(onDisk !== null && onDisk >= lastPrinted, `counter on disk ${onDisk} >= last printed ${lastPrinted}`);

  // The next boot of the same disk continues from the stored value.
  const again = bootTiny(image, disk);
  try {
    const restart = await again.waitFor('counter-start');
    assert.equal(restart.n, onDisk, 'second boot starts counting from the value on disk');
    const next = await again.waitFor('counter');
    assert.equal(next.n, onDisk + 1n);
  } finally {
    await again.kill();
  }

  function heartbeatsAfter(from: number): number {
    let n = 0;
    for (let i = from; i < guest.events.length; i++) if (guest.events[i]!.kind === 'heartbeat') n++;
    return n;
  }
});
