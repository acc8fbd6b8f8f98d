/**
 * The graphical and serial consoles of a real tiny guest through a real daemon: RFB spoken by
 * hand over /api/v1/vms/{id}/vnc (handshake, security, a framebuffer update of the screen's
 * size), Debian's vncsnapshot through `flightdeck vm vnc`, the PNG screenshot, and console
 * tickets refused with their stable codes. One daemon and one guest for the whole file.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { TestDaemon, CLI } from '../helpers/daemon.js';
import { waitFor } from '../../src/core/process.js';

let d: TestDaemon;
let vmId = '';

before(async () => {
  d = await TestDaemon.start();
  const b = await d.cli(['image', 'build', 'tiny']);
  assert.equal(b.code, 0, b.stderr + b.stdout);
  const c = await d.json<{ result: { id: string } }>(['vm', 'create', 'con', '--image', 'tiny', '--memory', '128M']);
  vmId = c.result.id;
  await d.json(['vm', 'create', 'off', '--image', 'tiny', '--memory', '128M']);
  assert.equal((await d.json<{ state: string }>(['vm', 'start', 'con'])).state, 'succeeded');
});
after(async () => {
  await d?.dispose();
});

async function ticket(vm: string): Promise<string> {
  const r = await d.api('POST', `/api/v1/vms/${vm}/console-ticket`);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return (r.body as { ticket: string }).ticket;
}

/** Opens a console WebSocket; resolves with the socket, or with the refusal's status and code. */
function openWs(path: string): Promise<WebSocket | { status: number; code: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(d.url.replace('http', 'ws') + path);
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, code: (JSON.parse(body) as { error: { code: string } }).error.code }),
      );
    });
    ws.once('error', reject);
  });
}

/** Reads exact byte counts from a WebSocket's stream of binary messages. */
class Reader {
  private buf = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  constructor(ws: WebSocket) {
    ws.on('message', (m: Buffer) => {
      this.buf = Buffer.concat([this.buf, m]);
      this.wake?.();
    });
  }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) await new Promise<void>((r) => (this.wake = r));
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
}

test('RFB over /vnc: version, security None, ServerInit, a full-screen raw framebuffer update', async () => {
  const ws = await openWs(`/api/v1/vms/${vmId}/vnc?ticket=${await ticket(vmId)}`);
  assert.ok(ws instanceof WebSocket, JSON.stringify(ws));
  const r = new Reader(ws);
  assert.equal((await r.read(12)).toString('latin1'), 'RFB 003.008\n');
  ws.send(Buffer.from('RFB 003.008\n', 'latin1'));
  const nTypes = (await r.read(1))[0]!;
  const types = [...(await r.read(nTypes))];
  assert.ok(types.includes(1), `security types ${types.join(',')} offer None`);
  ws.send(Buffer.from([1]));
  assert.equal((await r.read(4)).readUInt32BE(0), 0, 'SecurityResult OK');
  ws.send(Buffer.from([1])); // ClientInit, shared
  const init = await r.read(24);
  const width = init.readUInt16BE(0);
  const height = init.readUInt16BE(2);
  const bpp = init[4]!;
  const name = (await r.read(init.readUInt32BE(20))).toString('utf8');
  assert.ok(width >= 640 && height >= 400, `${width}x${height}`);
  assert.equal(bpp, 32);
  assert.ok(name.length > 0);
  // FramebufferUpdateRequest, not incremental, the whole screen; no SetEncodings: raw.
  const req = Buffer.alloc(10);
  req[0] = 3;
  req.writeUInt16BE(width, 6);
  req.writeUInt16BE(height, 8);
  ws.send(req);
  const head = await r.read(4);
  assert.equal(head[0], 0, 'FramebufferUpdate');
  const rects = head.readUInt16BE(2);
  let pixels = 0;
  for (let i = 0; i < rects; i++) {
    const h = await r.read(12);
    const [w, hh, enc] = [h.readUInt16BE(4), h.readUInt16BE(6), h.readInt32BE(8)];
    assert.equal(enc, 0, 'raw encoding');
    await r.read(w * hh * (bpp / 8));
    pixels += w * hh;
  }
  assert.equal(pixels, width * height, 'the update covers the screen');
  ws.close();
});

test('tickets: used twice, for another VM, bogus, and VMs without a console are refused with codes', async () => {
  const t = await ticket(vmId);
  const first = await openWs(`/api/v1/vms/${vmId}/console?ticket=${t}`);
  assert.ok(first instanceof WebSocket);
  first.close();
  assert.deepEqual(await openWs(`/api/v1/vms/${vmId}/vnc?ticket=${t}`), { status: 401, code: 'FD_TICKET_USED' });
  assert.deepEqual(await openWs(`/api/v1/vms/off/vnc?ticket=${await ticket(vmId)}`), {
    status: 403,
    code: 'FD_TICKET_WRONG_VM',
  });
  assert.deepEqual(await openWs(`/api/v1/vms/${vmId}/vnc?ticket=fdt_nope`), { status: 401, code: 'FD_TICKET_INVALID' });
  assert.deepEqual(await openWs(`/api/v1/vms/${vmId}/vnc`), { status: 401, code: 'FD_UNAUTHORIZED' });
  // The long-lived token in the URL is not accepted any more, anywhere.
  assert.deepEqual(await openWs(`/api/v1/vms/${vmId}/vnc?access_token=${d.token}`), {
    status: 401,
    code: 'FD_UNAUTHORIZED',
  });
  assert.equal((await d.api('GET', `/api/v1/vms?access_token=${d.token}`, undefined, null)).status, 401);
  assert.deepEqual(await openWs(`/api/v1/vms/off/vnc?ticket=${await ticket('off')}`), {
    status: 409,
    code: 'FD_VM_NOT_RUNNING',
  });
  const viewer = (await d.api('POST', '/api/v1/tokens', { name: 'look', role: 'viewer' })).body as { token: string };
  const refused = await d.api('POST', `/api/v1/vms/${vmId}/console-ticket`, undefined, viewer.token);
  assert.equal(refused.status, 403);
  const session = await d.api('GET', '/api/v1/session', undefined, viewer.token);
  assert.equal((session.body as { token: { role: string } }).token.role, 'viewer');
});

test('screenshot: a PNG of the guest screen; a stopped VM has none', async () => {
  const res = await fetch(`${d.url}/api/v1/vms/con/screenshot`, { headers: { authorization: `Bearer ${d.token}` } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/png');
  const png = Buffer.from(await res.arrayBuffer());
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
  assert.ok(png.readUInt32BE(16) >= 640, `width ${png.readUInt32BE(16)}`);
  const off = await d.api('GET', '/api/v1/vms/off/screenshot');
  assert.equal(off.status, 409);
  assert.equal((off.body as { error: { code: string } }).error.code, 'FD_VM_NOT_RUNNING');
});

test('vncsnapshot (a real VNC client) through `flightdeck vm vnc` gets a JPEG of the screen size', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'fd-vnc-'));
  const tunnel = spawn(
    process.execPath,
    [CLI, 'vm', 'vnc', 'con', '--listen', '127.0.0.1:0', '--json', '--data-dir', d.dataDir],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  try {
    let out = '';
    tunnel.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const listen = await waitFor(
      'vm vnc listening',
      () => {
        if (tunnel.exitCode !== null) throw new Error(`vm vnc exited ${tunnel.exitCode}`);
        const line = out.split('\n').find((l) => l.startsWith('{'));
        return line ? (JSON.parse(line) as { listen: string }).listen : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 50 },
    );
    const port = listen.split(':').at(-1)!;
    const jpg = join(tmp, 'screen.jpg');
    await promisify(execFile)('vncsnapshot', ['-allowblank', '-quiet', `127.0.0.1::${port}`, jpg], { timeout: 60_000 });
    const img = await readFile(jpg);
    assert.equal(img.readUInt16BE(0), 0xffd8, 'a JPEG');
    // Width and height from the SOF0/SOF2 segment.
    let i = 2;
    let size: [number, number] | undefined;
    while (i < img.length) {
      const marker = img.readUInt16BE(i);
      const len = img.readUInt16BE(i + 2);
      if (marker === 0xffc0 || marker === 0xffc2) {
        size = [img.readUInt16BE(i + 7), img.readUInt16BE(i + 5)];
        break;
      }
      i += 2 + len;
    }
    const shot = await fetch(`${d.url}/api/v1/vms/con/screenshot`, { headers: { authorization: `Bearer ${d.token}` } });
    const png = Buffer.from(await shot.arrayBuffer());
    assert.deepEqual(size, [png.readUInt32BE(16), png.readUInt32BE(20)]);
  } finally {
    tunnel.kill('SIGTERM');
    await rm(tmp, { recursive: true, force: true });
  }
});

test('OVA upload by an operator: inspected first, then imported; a broken package leaves nothing', async () => {
  const dir = join(d.dataDir, 'export');
  await mkdir(dir, { recursive: true });
  const ova = join(dir, 'off.ova');
  const exp = await d.cli(['ovf', 'export', 'off', '--out', ova]);
  assert.equal(exp.code, 0, exp.stderr + exp.stdout);
  const op = (await d.api('POST', '/api/v1/tokens', { name: 'ops', role: 'operator' })).body as { token: string };
  const send = (body: Uint8Array<ArrayBuffer>) =>
    fetch(`${d.url}/api/v1/appliances/upload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${op.token}`, 'content-type': 'application/octet-stream' },
      body,
    });
  const res = await send(new Uint8Array(await readFile(ova)));
  const pkg = (await res.json()) as { upload: string; systems: { name: string; vcpus: number }[]; eulas: string[] };
  assert.equal(res.status, 200, JSON.stringify(pkg));
  assert.equal(pkg.systems.length, 1);
  assert.deepEqual(pkg.eulas, []);
  const imp = await d.api('POST', `/api/v1/appliances/uploads/${pkg.upload}/import`, { name: 'fromova' }, op.token);
  assert.equal(imp.status, 202, JSON.stringify(imp.body));
  const task = await d.json<{ state: string }>(['task', 'wait', (imp.body as { id: string }).id]);
  assert.equal(task.state, 'succeeded');
  assert.equal((await d.api('GET', '/api/v1/vms/fromova')).status, 200);
  const again = await d.api('POST', `/api/v1/appliances/uploads/${pkg.upload}/import`, {}, op.token);
  assert.equal((again.body as { error: { code: string } }).error.code, 'FD_UPLOAD_NOT_FOUND', 'an upload imports once');

  const bad = await send(new TextEncoder().encode('not a tar archive at all'.repeat(100)));
  assert.ok(bad.status >= 400 && bad.status < 500, String(bad.status));
  const left = await readdir(join(d.dataDir, 'appliances', 'uploads'));
  assert.deepEqual(left, [], 'nothing of the broken upload is left');
});
