/**
 * The demo's console as a person sees it: the tiny image booted with its own command line (no
 * fd.probes=1) prints a short banner and a login prompt, no probe lines, and nothing more while
 * it idles; root logs in without a password and gets a shell.
 */
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { sleep, waitFor } from '../../src/core/process.js';
import { buildTinyImage, TINY_PROBES_ARG, type TinyImage } from '../../src/host/images/tiny.js';
import { bootTiny, cleanup, freePort, privateDisk, type TinyGuest } from './tiny-guest.js';

let image: TinyImage;
let guest: TinyGuest | undefined;
let dir = '';
before(async () => {
  image = await buildTinyImage();
});
after(async () => {
  await guest?.kill();
  if (dir) await cleanup(dir);
});

test('the demo console: banner and login prompt, no probe lines, quiet while idle; root logs in', async () => {
  assert.equal(image.cmdline.includes(TINY_PROBES_ARG), false, 'the image itself does not ask for probes');
  const p = await privateDisk(image);
  dir = p.dir;
  let text = '';
  guest = bootTiny(image, p.disk, { probes: false, machine: 'q35', hostfwdPort: await freePort() });
  guest.child.stdout!.on('data', (b: Buffer) => (text += b.toString('latin1')));
  // within the boot time the tests allow a loaded machine (a guest boots in 3-20 s)
  await waitFor('login prompt', () => (/login: $/m.test(text) ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 200,
  }).catch((err: unknown) => {
    throw new Error(`no login prompt; console:\n${text.slice(-3000)}`, { cause: err });
  });
  assert.doesNotMatch(text, /FD-[A-Z]/, `no probe line on the demo console:\n${text.slice(-3000)}`);
  assert.match(text, /flightdeck's tiny guest/, 'the banner says what this is');
  assert.match(text, /Log in as root \(no password\)/, 'and how to get in');
  assert.match(text, /eth0: 10\.0\.2\.15\/24/, 'and the address DHCP gave');

  // idle: nothing more arrives (the probes' floods are gone)
  const before = text.length;
  await sleep(3000);
  assert.equal(text.slice(before), '', 'an idle demo console stays quiet');

  // a terminal sends CR for Enter; ash asks the cursor position after its prompt (ESC [6n)
  guest.child.stdin!.write('root\r');
  await waitFor('shell prompt', () => (/# (\x1b\[6n)?$/.test(text.slice(before)) ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 200,
  });
  guest.child.stdin!.write('echo fd-ok-$((6 * 7))\r');
  await waitFor('shell answer', () => (/fd-ok-42/.test(text) ? true : undefined), {
    timeoutMs: 30_000,
    intervalMs: 200,
  });
});
