// The NBD server against QEMU's own NBD client (qemu-io, qemu-img), plus a hand-written client
// for the malformed input QEMU never sends. Every test serves a FileDevice (a raw file) so it
// needs nothing from the VHD engine; the VHD tests are in vhd-serve.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startNbdServer, type NbdServer } from '../../src/disk/nbd/server.js';
import { run, sleep } from '../../src/core/process.js';
import { FileDevice } from './file-device.js';
import { RawClient, nbdUrl, qemuImg, qemuIo, tempDir, u32 } from './helpers.js';

const MiB = 1024 * 1024;

async function serve(
  dir: string,
  name: string,
  sizeBytes: number,
  opts: { readOnly?: boolean } = {},
): Promise<{ dev: FileDevice; server: NbdServer; socket: string; file: string }> {
  const file = join(dir, `${name}.raw`);
  const socket = join(dir, `${name}.sock`);
  const dev = await FileDevice.create(file, sizeBytes);
  const server = await startNbdServer({ socketPath: socket, device: dev, readOnly: opts.readOnly === true });
  return { dev, server, socket, file };
}

describe('NBD server with QEMU as the client', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir('fd-nbd-')));
  after(async () => cleanup());

  test('a pattern written by qemu-io reads back through the device, the file and qemu-io', async () => {
    const { dev, server, socket, file } = await serve(dir, 'rw', 8 * MiB);
    try {
      await qemuIo(socket, ['write -P 0xab 0 64k', 'write -P 0x5c 1m 4k', 'write -f -P 0x11 3m 512', 'flush']);
      assert.deepEqual(await dev.read(0, 65536), Buffer.alloc(65536, 0xab));
      assert.deepEqual(await dev.read(MiB, 4096), Buffer.alloc(4096, 0x5c));
      const raw = await readFile(file);
      assert.deepEqual(raw.subarray(3 * MiB, 3 * MiB + 512), Buffer.alloc(512, 0x11));
      assert.equal(
        raw.subarray(64 * 1024, MiB).every((b) => b === 0),
        true,
        'bytes between writes stay zero',
      );
      assert.ok(dev.fuaWrites >= 1, 'the FUA write reached the device as FUA');
      assert.ok(dev.flushes >= 1, 'the flush reached the device');
      // Structured reads with holes (a 2 MiB read spans data and never-written chunks).
      await qemuIo(socket, ['read -P 0xab 0 64k', 'read -P 0 64k 960k', 'read -P 0x5c 1m 4k', 'read -P 0 2m 1m']);
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('qemu-img map sees holes and data through BLOCK_STATUS, and convert copies the export', async () => {
    const { dev, server, socket, file } = await serve(dir, 'map', 4 * MiB);
    try {
      await qemuIo(socket, ['write -P 0x42 1m 128k', 'write -P 0x43 3m 64k']);
      const map = JSON.parse((await qemuImg(['map', '--output=json', '-f', 'raw', nbdUrl(socket)])).stdout) as {
        start: number;
        length: number;
        data: boolean;
        zero: boolean;
      }[];
      const dataRanges = map.filter((e) => e.data).map((e) => [e.start, e.length]);
      assert.deepEqual(dataRanges, [
        [MiB, 128 * 1024],
        [3 * MiB, 64 * 1024],
      ]);
      assert.ok(
        map.filter((e) => !e.data).every((e) => e.zero),
        'holes read as zero',
      );

      const out = join(dir, 'map-copy.raw');
      await qemuImg(['convert', '-f', 'raw', '-O', 'raw', nbdUrl(socket), out]);
      assert.deepEqual(await readFile(out), await readFile(file));
      await qemuImg(['compare', '-f', 'raw', '-F', 'raw', nbdUrl(socket), out]);
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('write zeroes: without unmap keeps the range allocated, with unmap makes it a hole', async () => {
    const { dev, server, socket } = await serve(dir, 'zeroes', 4 * MiB);
    try {
      await qemuIo(socket, ['write -P 0x77 0 2m', 'write -z 0 1m', 'write -z -u 1m 1m']);
      assert.equal(dev.allocated.has(0), true, 'NO_HOLE zeroing left chunk 0 allocated');
      assert.equal(dev.allocated.has(16), false, 'zeroing with unmap freed chunk 16');
      assert.deepEqual(await dev.read(0, 2 * MiB), Buffer.alloc(2 * MiB));
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('overlapping writes in flight together land in the order they were sent', async () => {
    const { dev, server, socket } = await serve(dir, 'order', 4 * MiB);
    try {
      let first = true;
      // Holding the first write back would let the second finish first without ordering.
      dev.beforeWrite = async () => {
        if (first) {
          first = false;
          await sleep(300);
        }
      };
      await qemuIo(socket, ['aio_write -P 0x01 0 64k', 'aio_write -P 0x02 32k 64k', 'aio_flush']);
      const got = await dev.read(0, 96 * 1024);
      assert.deepEqual(got.subarray(0, 32 * 1024), Buffer.alloc(32 * 1024, 0x01));
      assert.deepEqual(got.subarray(32 * 1024), Buffer.alloc(64 * 1024, 0x02), 'the later write wins');
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('many concurrent requests from qemu-img bench and two clients at once all complete correctly', async () => {
    const { dev, server, socket } = await serve(dir, 'conc', 16 * MiB);
    try {
      await qemuImg([
        'bench',
        '-f',
        'raw',
        '-w',
        '-d',
        '16',
        '-c',
        '2000',
        '-s',
        '4k',
        '-S',
        '8k',
        '--pattern=61',
        nbdUrl(socket),
      ]);
      // Two writers on different halves at the same time, then verify each half.
      await Promise.all([
        qemuIo(socket, ['aio_write -P 0xa1 0 1m', 'aio_write -P 0xa2 1m 1m', 'aio_write -P 0xa3 2m 1m', 'aio_flush']),
        qemuIo(socket, ['aio_write -P 0xb1 8m 1m', 'aio_write -P 0xb2 9m 1m', 'aio_write -P 0xb3 10m 1m', 'aio_flush']),
      ]);
      await qemuIo(socket, ['read -P 0xa2 1m 1m', 'read -P 0xb3 10m 1m']);
      const benchArea = await dev.read(4 * MiB, 4096);
      assert.deepEqual(benchArea, Buffer.alloc(4096, 61), 'qemu-img bench writes (stride 8k) landed');
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('a read-only export refuses writes with EPERM and keeps serving reads', async () => {
    const file = join(dir, 'ro.raw');
    const w = await FileDevice.create(file, MiB);
    await w.write(0, Buffer.alloc(4096, 0x99));
    await w.close();
    const dev = await FileDevice.open(file, { readOnly: true });
    const socket = join(dir, 'ro.sock');
    const server = await startNbdServer({ socketPath: socket, device: dev });
    try {
      assert.equal(server.readOnly, true, 'a read-only device makes a read-only export');
      const out = await qemuIo(socket, ['write -P 0x01 0 4k'], { allowFail: true });
      assert.match(out, /Permission denied|read-only|not permitted/i, 'QEMU sees the export as read-only');
      await qemuIo(socket, ['read -P 0x99 0 4k'], { readOnly: true });
      // QEMU never sends a write to an export flagged read-only; a raw client does, and gets EPERM.
      const c = await RawClient.connect(socket);
      try {
        const { flags } = await c.handshake();
        assert.ok(flags & 2, 'NBD_FLAG_READ_ONLY is advertised');
        c.request(1, 5, 0, 512);
        c.socket.write(Buffer.alloc(512, 0x01));
        assert.deepEqual(await c.simpleReply(), { error: 1, cookie: 5 });
        c.request(6, 6, 0, 4096);
        assert.deepEqual(await c.simpleReply(), { error: 1, cookie: 6 });
      } finally {
        c.close();
      }
      assert.deepEqual(await readFile(file).then((b) => b.subarray(0, 4096)), Buffer.alloc(4096, 0x99));
    } finally {
      await server.close();
      await dev.close();
    }
  });
});

describe('NBD server with a malformed client', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let ctx: Awaited<ReturnType<typeof serve>>;
  before(async () => {
    ({ dir, cleanup } = await tempDir('fd-nbd-bad-'));
    ctx = await serve(dir, 'bad', MiB);
  });
  after(async () => {
    await ctx.server.close();
    await ctx.dev.close();
    await cleanup();
  });

  test('bad request magic drops that client and the server keeps serving others', async () => {
    const bad = await RawClient.connect(ctx.socket);
    await bad.handshake();
    bad.request(0, 1, 0, 512, { magic: 0xdeadbeef });
    await bad.waitClosed();
    await qemuIo(ctx.socket, ['write -P 0x21 0 4k', 'read -P 0x21 0 4k']);
  });

  test('bad option magic in the handshake drops the client', async () => {
    const bad = await RawClient.connect(ctx.socket);
    await bad.read(18);
    bad.socket.write(u32(3));
    bad.socket.write(Buffer.alloc(16, 0x41));
    await bad.waitClosed();
  });

  test('read past the end and oversized read get EINVAL/EOVERFLOW; the connection stays usable', async () => {
    const c = await RawClient.connect(ctx.socket);
    try {
      const { size, flags } = await c.handshake();
      assert.equal(size, BigInt(MiB));
      assert.ok(flags & 1, 'HAS_FLAGS');
      c.request(0, 7, MiB - 512, 1024);
      assert.deepEqual(await c.simpleReply(), { error: 22, cookie: 7 });
      c.request(0, 8, 0, 64 * MiB);
      assert.deepEqual(await c.simpleReply(), { error: 75, cookie: 8 });
      c.request(1, 9, MiB, 0); // zero-length write at the end is fine
      assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 9 });
      c.request(7, 10, 0, 512); // BLOCK_STATUS without a negotiated context
      assert.deepEqual(await c.simpleReply(), { error: 22, cookie: 10 });
      c.request(99, 11, 0, 512); // unknown command
      assert.deepEqual(await c.simpleReply(), { error: 22, cookie: 11 });
      c.request(0, 12, 0, 512);
      assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 12 });
      assert.equal((await c.read(512)).length, 512);
    } finally {
      c.close();
    }
  });

  test('a write past the end gets ENOSPC and an oversized write drops only that client', async () => {
    const c = await RawClient.connect(ctx.socket);
    const { size } = await c.handshake();
    c.request(1, 1, Number(size) - 512, 1024);
    c.socket.write(Buffer.alloc(1024));
    assert.deepEqual(await c.simpleReply(), { error: 28, cookie: 1 });
    c.request(1, 2, 0, 0x7fffffff);
    assert.deepEqual(await c.simpleReply(), { error: 75, cookie: 2 });
    await c.waitClosed();
    await qemuIo(ctx.socket, ['read -P 0x21 0 4k']);
  });

  test('adjacent pipelined reads are served by one device read, each reply with its own bytes', async () => {
    const base = 256 * 1024;
    for (let i = 0; i < 16; i++) await ctx.dev.write(base + i * 4096, Buffer.alloc(4096, 0x40 + i));
    const c = await RawClient.connect(ctx.socket);
    try {
      await c.handshake();
      const before = ctx.dev.reads;
      // One write carrying 16 requests, in shuffled order: they arrive in one batch.
      const order = [3, 0, 15, 7, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14];
      c.socket.cork();
      for (const i of order) c.request(0, 500 + i, base + i * 4096, 4096);
      c.socket.uncork();
      const got = new Map<number, Buffer>();
      for (let n = 0; n < 16; n++) {
        const r = await c.simpleReply();
        assert.equal(r.error, 0);
        got.set(r.cookie, Buffer.from(await c.read(4096)));
      }
      for (let i = 0; i < 16; i++) assert.deepEqual(got.get(500 + i), Buffer.alloc(4096, 0x40 + i), `read ${i}`);
      assert.ok(ctx.dev.reads - before < 16, `16 reads took ${ctx.dev.reads - before} device reads`);
    } finally {
      c.close();
    }
  });

  test('merged reads answer with structured OFFSET_DATA chunks when structured replies are on', async () => {
    const base = 384 * 1024;
    for (let i = 0; i < 4; i++) await ctx.dev.write(base + i * 4096, Buffer.alloc(4096, 0x60 + i));
    const c = await RawClient.connect(ctx.socket);
    try {
      await c.handshake({ structured: true });
      c.socket.cork();
      for (let i = 3; i >= 0; i--) c.request(0, 700 + i, base + i * 4096, 4096);
      c.socket.uncork();
      for (let n = 0; n < 4; n++) {
        const ch = await c.chunk();
        assert.equal(ch.type, 1, 'NBD_REPLY_TYPE_OFFSET_DATA');
        assert.equal(ch.flags & 1, 1, 'the only chunk carries NBD_REPLY_FLAG_DONE');
        const i = ch.cookie - 700;
        assert.equal(Number(ch.payload.readBigUInt64BE(0)), base + i * 4096, 'chunk offset');
        assert.deepEqual(ch.payload.subarray(8), Buffer.alloc(4096, 0x60 + i));
      }
    } finally {
      c.close();
    }
  });

  test('a bad sector inside a merged read fails only the request that covers it', async () => {
    const c = await RawClient.connect(ctx.socket);
    try {
      await c.handshake();
      ctx.dev.badByte = 512 * 1024 + 2 * 4096 + 100; // inside the third 4 KiB read
      c.socket.cork();
      for (let i = 0; i < 4; i++) c.request(0, 600 + i, 512 * 1024 + i * 4096, 4096);
      c.socket.uncork();
      const errors = new Map<number, number>();
      for (let n = 0; n < 4; n++) {
        const r = await c.simpleReply();
        errors.set(r.cookie, r.error);
        if (r.error === 0) await c.read(4096);
      }
      assert.deepEqual(
        [...errors].sort((a, b) => a[0] - b[0]),
        [
          [600, 0],
          [601, 0],
          [602, 5],
          [603, 0],
        ],
      );
    } finally {
      ctx.dev.badByte = null;
      c.close();
    }
  });

  test('an unknown export name is refused with NBD_REP_ERR_UNKNOWN', async () => {
    const c = await RawClient.connect(ctx.socket);
    try {
      await assert.rejects(c.handshake({ exportName: 'nope' }), /0x80000006/);
    } finally {
      c.close();
    }
  });
});

describe('NBD server handshake options', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir('fd-nbd-opt-')));
  after(async () => cleanup());

  test('exports are never listed (qemu-nbd --list, nbdinfo --list); nbdinfo of the name sees size, description, block sizes, base:allocation', async () => {
    const file = join(dir, 'list.raw');
    const dev = await FileDevice.create(file, 4 * MiB);
    const socket = join(dir, 'list.sock');
    const server = await startNbdServer({
      socketPath: socket,
      device: dev,
      exportName: 'disk0',
      description: 'vm1 root',
    });
    try {
      // NBD_OPT_LIST is refused by policy: an export name is a capability, never shown.
      const list = await run('qemu-nbd', ['--list', '-k', socket], { allowFail: true });
      assert.notEqual(list.code, 0);
      assert.match(list.stderr, /Denied by server for option 3/);
      assert.doesNotMatch(list.stdout + list.stderr, /disk0/);
      const list2 = await run('nbdinfo', ['--list', nbdUrl(socket, '')], { allowFail: true });
      assert.notEqual(list2.code, 0);
      assert.doesNotMatch(list2.stdout + list2.stderr, /disk0/);
      // INFO/GO and LIST_META_CONTEXT of the name the client knows, from libnbd's client.
      const out = (await run('nbdinfo', [nbdUrl(socket, 'disk0')])).stdout;
      assert.match(out, /description: vm1 root/);
      assert.match(out, /export-size: 4194304/);
      assert.match(out, /block_size_minimum: 512/);
      assert.match(out, /block_size_maximum: 33554432/);
      assert.match(out, /base:allocation/);
      assert.match(out, /can_df: true/);
      // The named export works through a URL that names it; the default name is not served.
      await qemuIo(socket, ['write -P 0x12 0 4k'], { url: nbdUrl(socket, 'disk0') });
      assert.deepEqual(await dev.read(0, 4096), Buffer.alloc(4096, 0x12));
      const wrong = await qemuIo(socket, ['read 0 4k'], { allowFail: true });
      assert.match(wrong, /export|not (available|found)|unknown/i);
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('old-style NBD_OPT_EXPORT_NAME and NBD_OPT_ABORT', async () => {
    const dev = await FileDevice.create(join(dir, 'old.raw'), MiB);
    const socket = join(dir, 'old.sock');
    const server = await startNbdServer({ socketPath: socket, device: dev });
    try {
      const c = await RawClient.connect(socket);
      await c.read(18);
      c.socket.write(u32(1)); // FIXED_NEWSTYLE only: the reply keeps its 124 zero bytes
      c.option(1, Buffer.alloc(0));
      const r = await c.read(10 + 124);
      assert.equal(r.readBigUInt64BE(0), BigInt(MiB));
      assert.ok(r.subarray(10).every((b) => b === 0));
      c.request(0, 1, 0, 512);
      assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 1 });
      c.close();

      const a = await RawClient.connect(socket);
      await a.read(18);
      a.socket.write(u32(3));
      a.option(2, Buffer.alloc(0));
      assert.equal((await a.optionReply()).type, 1, 'NBD_OPT_ABORT is acknowledged');
      await a.waitClosed();
    } finally {
      await server.close();
      await dev.close();
    }
  });
});

describe('NBD server lifecycle', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ dir, cleanup } = await tempDir('fd-nbd-life-')));
  after(async () => cleanup());

  test('fence drops clients and refuses new ones until unfenced', async () => {
    const { dev, server, socket } = await serve(dir, 'fence', MiB);
    try {
      const c = await RawClient.connect(socket);
      await c.handshake();
      await server.fence();
      await c.waitClosed();
      assert.equal(server.fenced, true);
      const refused = await qemuIo(socket, ['read 0 4k'], { allowFail: true });
      assert.match(refused, /fail|error|closed|refused|Connection/i, 'a fenced server accepts no client');
      server.unfence();
      await qemuIo(socket, ['write -P 0x31 0 4k', 'read -P 0x31 0 4k']);
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('a write queued behind an overlapping one when the fence comes never reaches the disk', async () => {
    const { dev, server, socket } = await serve(dir, 'fence-queue', MiB);
    try {
      let writes = 0;
      dev.beforeWrite = async () => {
        if (writes++ === 0) await sleep(300);
      };
      const c = await RawClient.connect(socket);
      await c.handshake();
      c.request(1, 1, 0, 4096);
      c.socket.write(Buffer.alloc(4096, 0xa1));
      c.request(1, 2, 0, 4096);
      c.socket.write(Buffer.alloc(4096, 0xa2));
      await sleep(100); // both received; the second waits for the first
      await server.fence();
      assert.equal(writes, 1, 'only the write already at the device ran');
      assert.deepEqual(await dev.read(0, 4096), Buffer.alloc(4096, 0xa1));
      await c.waitClosed();
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('hundreds of pipelined requests (past the in-flight limit) all get their own reply', async () => {
    const { dev, server, socket } = await serve(dir, 'pipeline', MiB);
    try {
      await dev.write(0, Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251)));
      const c = await RawClient.connect(socket);
      await c.handshake();
      const n = 300;
      for (let i = 0; i < n; i++) c.request(0, 1000 + i, (i % 8) * 512, 512);
      const seen = new Set<number>();
      for (let i = 0; i < n; i++) {
        const r = await c.simpleReply();
        assert.equal(r.error, 0);
        const data = await c.read(512);
        const k = (r.cookie - 1000) % 8;
        assert.equal(data[0], (k * 512) % 251, `reply ${r.cookie} carries the data of its own offset`);
        seen.add(r.cookie);
      }
      assert.equal(seen.size, n);
      c.close();
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('a client that sends reads but never reads the replies stops being read (bounded memory)', async () => {
    const { dev, server, socket } = await serve(dir, 'backlog', MiB);
    try {
      const c = await RawClient.connect(socket);
      await c.handshake();
      c.socket.pause(); // never read a reply
      for (let i = 0; i < 1000; i++) c.request(0, i, 0, MiB); // 1000 MiB of replies asked for
      await sleep(1000);
      assert.ok(dev.reads > 10, `the server started answering (${dev.reads} reads)`);
      assert.ok(dev.reads < 300, `the server stopped reading requests once replies piled up (${dev.reads} reads)`);
      c.close();
    } finally {
      await server.close();
      await dev.close();
    }
  });

  test('close flushes, removes the socket, and a stale socket file is replaced on start', async () => {
    const { dev, server, socket } = await serve(dir, 'close', MiB);
    await qemuIo(socket, ['write -P 0x44 0 4k']);
    const flushesBefore = dev.flushes;
    await server.close();
    assert.ok(dev.flushes > flushesBefore || flushesBefore > 0, 'writes were flushed by disconnect or close');
    await assert.rejects(stat(socket), /ENOENT/);
    // A second server on a path where a live one listens is refused; a stale file is replaced.
    const s1 = await startNbdServer({ socketPath: socket, device: dev });
    await assert.rejects(startNbdServer({ socketPath: socket, device: dev }), /FD_NBD_SOCKET_BUSY|another server/);
    await s1.close();
    await dev.close();
  });
});
