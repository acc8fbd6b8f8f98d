// Reads of a VHD's holes over NBD: the server knows them from the BAT without reading, and
// answers as the client can take it. Structured replies get one NBD_REPLY_TYPE_OFFSET_HOLE
// chunk (no zeros on the wire), NBD_CMD_FLAG_DF gets one OFFSET_DATA chunk of zeros, a client
// without structured replies gets zeros; a read across data and a hole gets both chunks.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startNbdServer, type NbdServer } from '../../src/disk/nbd/server.js';
import { createVhd } from '../../src/disk/vhd/create.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { RawClient, qemuImg, tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const READ = 0;
const DF = 1 << 2;

describe('NBD reads of VHD holes', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let img: VhdImage;
  let server: NbdServer;
  let socket: string;
  before(async () => {
    ({ dir, cleanup } = await tempDir('fd-nbd-holes-'));
    const path = join(dir, 'd.vhd');
    await createVhd(path, { sizeBytes: 8 * MiB });
    img = await VhdImage.open(path, { write: true });
    await img.write(2 * MiB, Buffer.alloc(64 * 1024, 0x7e)); // block 1 allocated, the rest holes
    socket = join(dir, 'd.sock');
    server = await startNbdServer({ socketPath: socket, device: img });
  });
  after(async () => {
    await server.close();
    await img.close();
    await cleanup();
  });

  test('structured: a hole is one OFFSET_HOLE chunk; with DF one OFFSET_DATA of zeros', async () => {
    const c = await RawClient.connect(socket);
    try {
      await c.handshake({ structured: true });
      c.request(READ, 1, 4 * MiB, 64 * 1024);
      const h = await c.chunk();
      assert.deepEqual([h.type, h.flags & 1, h.cookie], [2, 1, 1], 'OFFSET_HOLE, DONE');
      assert.equal(Number(h.payload.readBigUInt64BE(0)), 4 * MiB);
      assert.equal(h.payload.readUInt32BE(8), 64 * 1024);
      assert.equal(h.payload.length, 12, 'no data on the wire');

      c.request(READ, 2, 4 * MiB, 64 * 1024, { flags: DF });
      const d = await c.chunk();
      assert.deepEqual([d.type, d.flags & 1, d.cookie], [1, 1, 2], 'DF: one OFFSET_DATA chunk, DONE');
      assert.deepEqual(d.payload.subarray(8), Buffer.alloc(64 * 1024));

      // A hole then data in one read (block 0 is a hole; block 1, allocated, is all data).
      c.request(READ, 3, 2 * MiB - 64 * 1024, 256 * 1024);
      const parts: Array<{ type: number; offset: number; length: number; done: boolean; bytes?: Buffer }> = [];
      for (;;) {
        const ch = await c.chunk();
        assert.equal(ch.cookie, 3);
        const offset = Number(ch.payload.readBigUInt64BE(0));
        if (ch.type === 2) parts.push({ type: 2, offset, length: ch.payload.readUInt32BE(8), done: !!(ch.flags & 1) });
        else
          parts.push({
            type: 1,
            offset,
            length: ch.payload.length - 8,
            done: !!(ch.flags & 1),
            bytes: ch.payload.subarray(8),
          });
        if (ch.flags & 1) break;
      }
      assert.deepEqual(
        parts.map((p) => [p.type, p.offset, p.length]),
        [
          [2, 2 * MiB - 64 * 1024, 64 * 1024],
          [1, 2 * MiB, 192 * 1024],
        ],
      );
      assert.deepEqual(parts[1]!.bytes, Buffer.concat([Buffer.alloc(64 * 1024, 0x7e), Buffer.alloc(128 * 1024)]));
    } finally {
      c.close();
    }
  });

  test('simple replies: a hole reads as zeros, data as data', async () => {
    const c = await RawClient.connect(socket);
    try {
      await c.handshake();
      c.request(READ, 9, 6 * MiB, 128 * 1024);
      assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 9 });
      assert.deepEqual(await c.read(128 * 1024), Buffer.alloc(128 * 1024));
      c.request(READ, 10, 2 * MiB, 4096);
      assert.deepEqual(await c.simpleReply(), { error: 0, cookie: 10 });
      assert.deepEqual(await c.read(4096), Buffer.alloc(4096, 0x7e));
    } finally {
      c.close();
    }
  });

  test('QEMU reads the whole disk through hole replies and gets the same bytes as qemu-img from the file', async () => {
    const out = join(dir, 'copy.raw');
    await qemuImg(['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///?socket=${socket}`, out]);
    const ref = join(dir, 'ref.raw');
    await img.flush();
    await qemuImg(['convert', '-f', 'vpc', '-O', 'raw', join(dir, 'd.vhd'), ref]);
    await qemuImg(['compare', '-f', 'raw', '-F', 'raw', out, ref]);
  });
});
