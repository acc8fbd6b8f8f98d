/**
 * The web UI in Debian's Chromium (playwright-core) against a real daemon and real tiny
 * guests: sign-in (a wrong token refused with the API's message), create and start a VM from
 * the form, see it turn running through SSE without a reload, the VGA console (its canvas
 * changes as the guest boots; it shows "stopped" and reconnects by itself on start), the
 * serial console (typed and pasted commands answered by the guest's shell), stop; then the
 * main path again at 390x844 with touch: no horizontal scroll, no control under 44 px.
 * Screenshots of each main page go to FD_SCREENSHOTS (docs/screenshots when refreshing them).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { TestDaemon } from '../helpers/daemon.js';
import { launchChromium } from '../helpers/browser.js';
import { waitFor } from '../../src/core/process.js';

let d: TestDaemon;
let browser: Browser;
let shots = '';
let ownShots = false;

before(async () => {
  d = await TestDaemon.start();
  const b = await d.cli(['image', 'build', 'tiny']);
  assert.equal(b.code, 0, b.stderr + b.stdout);
  browser = await launchChromium();
  shots = process.env['FD_SCREENSHOTS'] ?? '';
  if (!shots) {
    shots = await mkdtemp(join(tmpdir(), 'fd-shots-'));
    ownShots = true;
  }
  await mkdir(shots, { recursive: true });
});
after(async () => {
  await browser?.close();
  await d?.dispose();
  if (ownShots) await rm(shots, { recursive: true, force: true });
});

async function signIn(page: Page): Promise<void> {
  await page.goto(d.url + '/');
  await page.getByLabel('API token', { exact: true }).fill(d.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Hosts' }).waitFor();
}

/** A hash of the VGA canvas's pixels (noVNC draws into one canvas). */
const canvasHash = (page: Page): Promise<string> =>
  page.locator('[data-testid="vnc-screen"] canvas').evaluate((c: HTMLCanvasElement) => {
    const url = c.toDataURL('image/png');
    let h = 0;
    for (let i = 0; i < url.length; i++) h = (h * 31 + url.charCodeAt(i)) | 0;
    return `${c.width}x${c.height}:${h}`;
  });

async function terminalText(page: Page): Promise<string> {
  return page.locator('[data-testid="serial-terminal"] .xterm-rows').innerText();
}

async function vmState(name: string): Promise<string> {
  return ((await d.api('GET', `/api/v1/vms/${name}`)).body as { state: string }).state;
}

test('desktop: sign in, create, console, serial, stop', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: d.url });
  const page = await ctx.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(d.url + '/');
  await page.getByLabel('API token', { exact: true }).fill('fd_000000000000_wrongwrongwrongwrongwrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').getByText('not valid').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /FD_UNAUTHORIZED/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  await page.screenshot({ path: join(shots, 'signin-desktop.png') });
  await signIn(page);
  assert.ok(!page.url().includes(d.token), 'the token is never in a URL');

  // Create from the form, not started: the console will see it start.
  await page.getByRole('link', { name: 'Create VM' }).click();
  await page.getByLabel('Name', { exact: true }).fill('webvm');
  await page.getByLabel('Boot from').selectOption('image:tiny');
  await page.getByLabel('Memory', { exact: true }).fill('128M');
  await page.getByLabel('Start it once created').uncheck();
  await page.screenshot({ path: join(shots, 'create-desktop.png') });
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByRole('region', { name: 'Task' }).getByText('succeeded').waitFor({ timeout: 120_000 });
  await page.screenshot({ path: join(shots, 'task-desktop.png') });

  await page.getByRole('link', { name: 'Fleet' }).click();
  const row = page.locator('.vm-row', { has: page.getByRole('link', { name: 'webvm', exact: true }) });
  await row.waitFor();
  assert.equal(await row.getAttribute('data-state'), 'stopped');
  // Marks this document: a reload would lose it.
  await page.evaluate(() => ((window as unknown as { fdMark: number }).fdMark = 1));
  await row.getByRole('checkbox').check();
  await page.getByRole('toolbar', { name: 'Bulk actions' }).getByRole('button', { name: 'Start' }).click();
  await page.locator('.vm-row[data-state="running"]', { hasText: 'webvm' }).waitFor({ timeout: 120_000 });
  assert.equal(await page.evaluate(() => (window as unknown as { fdMark?: number }).fdMark), 1, 'no reload');
  await page.screenshot({ path: join(shots, 'fleet-desktop.png') });

  // Stop it through the API: the console opened now shows "stopped", then reconnects by itself.
  assert.equal((await d.api('POST', '/api/v1/vms/webvm/actions/stop?wait=true')).status, 200);
  await page.getByRole('link', { name: 'webvm', exact: true }).click();
  await page.getByRole('heading', { name: 'webvm' }).waitFor();
  await page.getByRole('link', { name: 'Console' }).click();
  await page.getByRole('status').getByText('stopped').waitFor();
  assert.equal((await d.api('POST', '/api/v1/vms/webvm/actions/start')).status, 202);
  await page.getByRole('status').getByText('connected').waitFor({ timeout: 120_000 });
  const first = await canvasHash(page);
  const changed = await waitFor(
    'the VGA canvas changes as the guest boots',
    async () => {
      const h = await canvasHash(page);
      return h !== first ? h : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 200 },
  );
  assert.match(changed, /^\d+x\d+:/);
  assert.ok(Number(changed.split('x')[0]) >= 640, changed);
  await page.getByRole('button', { name: 'Paste' }).click();
  await page.getByLabel('Text to type').fill('root\n');
  await page.getByRole('button', { name: 'Type it' }).click();
  await page.getByRole('button', { name: 'Ctrl-Alt-Del' }).isEnabled();
  await page.screenshot({ path: join(shots, 'console-desktop.png') });

  // The serial console: the guest's shell answers what is typed and what is pasted.
  await page.getByRole('link', { name: '← webvm' }).click();
  await page.getByRole('link', { name: 'Serial' }).click();
  await page.getByRole('status').getByText('connected').waitFor({ timeout: 60_000 });
  const term = page.locator('[data-testid="serial-terminal"]');
  await term.click();
  // The tiny guest's serial console: a login prompt (root, no password), then a shell.
  await page.keyboard.press('Enter');
  await waitFor('the login prompt', async () => (/login:/.test(await terminalText(page)) ? true : undefined), {
    timeoutMs: 120_000,
    intervalMs: 300,
  });
  await page.keyboard.type('root\n');
  await waitFor('a shell prompt', async () => (/#\s*$/.test((await terminalText(page)).trimEnd()) ? true : undefined), {
    timeoutMs: 60_000,
    intervalMs: 300,
  });
  await page.keyboard.type('echo typed-$((6*7))\n');
  await waitFor(
    'the guest answers typed input',
    async () => ((await terminalText(page)).includes('typed-42') ? true : undefined),
    {
      timeoutMs: 60_000,
      intervalMs: 300,
    },
  );
  await page.evaluate(() => navigator.clipboard.writeText('echo pasted-$((2+3))\n'));
  await page.getByRole('button', { name: 'Paste' }).click();
  await waitFor(
    'the guest answers pasted input',
    async () => ((await terminalText(page)).includes('pasted-5') ? true : undefined),
    {
      timeoutMs: 60_000,
      intervalMs: 300,
    },
  );
  await page.screenshot({ path: join(shots, 'serial-desktop.png') });

  // Stop from the VM page; the page follows through SSE.
  await page.getByRole('link', { name: '← webvm' }).click();
  await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Stop' }).click();
  await page.locator('.vm-title .badge', { hasText: 'stopped' }).waitFor({ timeout: 60_000 });
  assert.equal(await vmState('webvm'), 'stopped');
  await page.getByRole('tab', { name: 'Tasks' }).click();
  await page.getByRole('link', { name: 'stop webvm' }).first().waitFor();
  await page.screenshot({ path: join(shots, 'vm-desktop.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});

/** Visible controls smaller than 44 px, and whether the page scrolls sideways. */
async function phoneProblems(page: Page): Promise<{ small: string[]; scrollX: boolean }> {
  return page.evaluate(() => {
    const small: string[] = [];
    const sel = 'button, input:not(.osk), select, textarea, [role=tab], nav a, a.button, a.vm-name';
    for (const el of document.querySelectorAll<HTMLElement>(sel)) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0 || r.bottom < 0 || r.top > innerHeight) continue;
      if (r.height < 44 || r.width < 44)
        small.push(
          `${el.tagName} "${el.getAttribute('aria-label') ?? el.textContent?.trim()}" ${Math.round(r.width)}x${Math.round(r.height)}`,
        );
    }
    return { small, scrollX: document.documentElement.scrollWidth > innerWidth };
  });
}

test('phone 390x844 with touch: the main path, no sideways scroll, no small controls', async () => {
  const ctx = await browser.newContext({
    viewport: { width: 390, height: 844 },
    isMobile: true,
    hasTouch: true,
    deviceScaleFactor: 2,
  });
  const page = await ctx.newPage();
  await page.goto(d.url + '/');
  assert.deepEqual(await phoneProblems(page), { small: [], scrollX: false });
  await page.screenshot({ path: join(shots, 'signin-phone.png') });
  await signIn(page);
  await page.getByRole('link', { name: 'webvm', exact: true }).waitFor();
  assert.deepEqual(await phoneProblems(page), { small: [], scrollX: false }, 'fleet');
  await page.screenshot({ path: join(shots, 'fleet-phone.png') });
  await page.getByRole('link', { name: 'webvm', exact: true }).tap();
  await page.getByRole('heading', { name: 'webvm' }).waitFor();
  await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Start' }).tap();
  await page.locator('.vm-title .badge', { hasText: 'running' }).waitFor({ timeout: 120_000 });
  assert.deepEqual(await phoneProblems(page), { small: [], scrollX: false }, 'vm page');
  await page.screenshot({ path: join(shots, 'vm-phone.png') });
  await page.getByRole('link', { name: 'Console' }).tap();
  await page.getByRole('status').getByText('connected').waitFor({ timeout: 120_000 });
  const canvas = page.locator('[data-testid="vnc-screen"] canvas');
  const box = (await canvas.boundingBox())!;
  assert.ok(box.width <= 390 && box.width > 300, `the screen scales to the phone (${box.width} px wide)`);
  await canvas.tap();
  await page.getByRole('button', { name: 'Keyboard' }).tap();
  assert.equal(
    await page.evaluate(() => document.activeElement?.getAttribute('aria-label')),
    'On-screen keyboard input',
  );
  assert.deepEqual(await phoneProblems(page), { small: [], scrollX: false }, 'console');
  await page.screenshot({ path: join(shots, 'console-phone.png') });
  await page.getByRole('link', { name: '← webvm' }).tap();
  await page.getByRole('toolbar', { name: 'VM actions' }).getByRole('button', { name: 'Stop' }).tap();
  await page.locator('.vm-title .badge', { hasText: 'stopped' }).waitFor({ timeout: 60_000 });
  await ctx.close();
});
