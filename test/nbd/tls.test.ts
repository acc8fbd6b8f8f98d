// NBD over TLS with client certificates (NBD_OPT_STARTTLS), against QEMU's client (qemu-io,
// qemu-img, qemu-nbd with tls-creds-x509) and libnbd's nbdinfo, with a throwaway CA. A client
// without TLS, without a certificate, or with one from another CA gets nothing and changes
// nothing; export names are never listed, over TLS or not.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { run } from '../../src/core/process.js';
import { startNbdServer, type NbdServer } from '../../src/disk/nbd/server.js';
import { createVhd } from '../../src/disk/vhd/create.js';
import { VhdImage } from '../../src/disk/vhd/image.js';
import { startVdisk, stopVdisk } from '../../src/host/vdisk-process.js';
import { readFile } from 'node:fs/promises';
import { RawClient, tempDir, u16, u32 } from './helpers.js';
import { makeTestCa, type TestCa } from './tls-ca.js';

const MiB = 1024 * 1024;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** qemu-io on a TCP NBD export, with the client credentials in `dir` (or none). */
function qemuIo(port: number, exportName: string, dir: string | null, cmds: string[]) {
  const opts = `driver=nbd,server.type=inet,server.host=localhost,server.port=${port},export=${exportName}`;
  const args = dir
    ? ['--object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=client`, '--image-opts', `${opts},tls-creds=tls0`]
    : ['--image-opts', opts];
  return run('qemu-io', [...args, ...cmds.flatMap((c) => ['-c', c])], { allowFail: true });
}

describe('NBD over TLS with client certificates', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let ca: TestCa;
  let img: VhdImage;
  let server: NbdServer;
  let port: number;
  before(async () => {
    ({ dir, cleanup } = await tempDir('fd-nbd-tls-'));
    ca = await makeTestCa(dir);
    const path = join(dir, 'd.vhd');
    await createVhd(path, { sizeBytes: 16 * MiB });
    img = await VhdImage.open(path, { write: true });
    port = await freePort();
    const [certPem, keyPem, caPem] = await Promise.all(
      [ca.server.certFile, ca.server.keyFile, ca.server.caFile].map((f) => readFile(f)),
    );
    server = await startNbdServer({
      socketPath: '',
      tcp: { host: '127.0.0.1', port },
      device: img,
      exportName: 'mirror-7f3a',
      tls: { certPem: certPem!, keyPem: keyPem!, caPem: caPem! },
    });
  });
  after(async () => {
    await server.close();
    await img.close();
    await cleanup();
  });

  test('qemu-io with the cluster CA client certificate writes and reads back over TLS', async () => {
    const res = await qemuIo(port, 'mirror-7f3a', ca.clientDir, ['write -P 0x5c 1m 64k', 'read -P 0x5c 1m 64k']);
    assert.equal(res.code, 0, res.stderr + res.stdout);
    assert.doesNotMatch(res.stdout, /fail|mismatch/i);
    assert.deepEqual(await img.read(MiB, 64 * 1024), Buffer.alloc(64 * 1024, 0x5c));
    // qemu-img too (BLOCK_STATUS and structured reads through TLS).
    const map = await run('qemu-img', [
      'map',
      '--output=json',
      '--object',
      `tls-creds-x509,id=tls0,dir=${ca.clientDir},endpoint=client`,
      '--image-opts',
      `driver=nbd,server.type=inet,server.host=localhost,server.port=${port},export=mirror-7f3a,tls-creds=tls0`,
    ]);
    const extents = JSON.parse(map.stdout) as Array<{ start: number; length: number; data: boolean }>;
    assert.ok(extents.some((e) => e.data && e.start <= MiB && e.start + e.length > MiB));
  });

  test('no TLS, no client certificate, a certificate of another CA: refused, the disk unchanged', async () => {
    const before = await img.read(4 * MiB, 64 * 1024);
    const plain = await qemuIo(port, 'mirror-7f3a', null, ['write -P 0x66 4m 64k']);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr + plain.stdout, /TLS/i);
    const anon = await qemuIo(port, 'mirror-7f3a', ca.anonDir, ['write -P 0x66 4m 64k']);
    assert.notEqual(anon.code, 0, 'a client without a certificate');
    const rogue = await qemuIo(port, 'mirror-7f3a', ca.rogueDir, ['write -P 0x66 4m 64k']);
    assert.notEqual(rogue.code, 0, 'a certificate from another CA');
    assert.deepEqual(await img.read(4 * MiB, 64 * 1024), before);
    assert.deepEqual(before, Buffer.alloc(64 * 1024));
  });

  test('in the clear, every option but STARTTLS gets NBD_REP_ERR_TLS_REQD and EXPORT_NAME closes', async () => {
    const c = await RawClient.connect({ host: '127.0.0.1', port });
    try {
      await c.read(18);
      c.socket.write(u32(3));
      const name = Buffer.from('mirror-7f3a');
      for (const [opt, data] of [
        [7, Buffer.concat([u32(name.length), name, u16(0)])], // GO
        [6, Buffer.concat([u32(name.length), name, u16(0)])], // INFO
        [3, Buffer.alloc(0)], // LIST
        [8, Buffer.alloc(0)], // STRUCTURED_REPLY
      ] as const) {
        c.option(opt, data);
        const r = await c.optionReply();
        assert.equal(r.type, 0x80000005, `option ${opt}: NBD_REP_ERR_TLS_REQD`);
        assert.doesNotMatch(r.data.toString(), /mirror-7f3a/);
      }
      c.option(1, name); // EXPORT_NAME cannot be answered with an error: the server closes
      await c.waitClosed();
    } finally {
      c.close();
    }
  });

  test('nbdinfo over TLS sees the export; neither nbdinfo --list nor qemu-nbd --list shows a name', async () => {
    const uri = `nbds://localhost:${port}/mirror-7f3a?tls-certificates=${ca.clientDir}`;
    const info = await run('nbdinfo', [uri]);
    assert.match(info.stdout, /TLS/);
    assert.match(info.stdout, /export-size: 16777216/);
    const list = await run('nbdinfo', ['--list', `nbds://localhost:${port}/?tls-certificates=${ca.clientDir}`], {
      allowFail: true,
    });
    assert.notEqual(list.code, 0);
    assert.doesNotMatch(list.stdout + list.stderr, /mirror-7f3a/);
    const qlist = await run(
      'qemu-nbd',
      [
        '--list',
        '--object',
        `tls-creds-x509,id=tls0,dir=${ca.clientDir},endpoint=client`,
        '--tls-creds',
        'tls0',
        '-b',
        'localhost',
        '-p',
        String(port),
      ],
      { allowFail: true },
    );
    assert.notEqual(qlist.code, 0);
    assert.match(qlist.stderr, /Denied by server for option 3/, 'refused after TLS came up');
    assert.doesNotMatch(qlist.stdout + qlist.stderr, /mirror-7f3a/);
  });

  test('a key that does not belong to the certificate is FD_NBD_TLS_CONFIG, before anything listens', async () => {
    const [certPem, caPem] = await Promise.all([ca.server.certFile, ca.server.caFile].map((f) => readFile(f)));
    const wrongKey = await readFile(join(dir, 'client-key.pem'));
    const p = await freePort();
    await assert.rejects(
      startNbdServer({
        socketPath: '',
        tcp: { host: '127.0.0.1', port: p },
        device: img,
        tls: { certPem: certPem!, keyPem: wrongKey, caPem: caPem! },
      }),
      (err: unknown) => (err as { code?: string }).code === 'FD_NBD_TLS_CONFIG',
    );
    const probe = await run('nbdinfo', [`nbd://localhost:${p}/`], { allowFail: true });
    assert.notEqual(probe.code, 0, 'nothing listens');
  });

  test('the vdisk process serves a TCP export with TLS from the paths in its config', async () => {
    const path = join(dir, 'v.vhd');
    await createVhd(path, { sizeBytes: 8 * MiB });
    const vport = await freePort();
    const id = await startVdisk({
      exports: [
        {
          image: path,
          socketPath: join(dir, 'v.sock'),
          exportName: 'standby-disk0',
          readOnly: false,
          tcp: { host: '127.0.0.1', port: vport },
          tls: ca.server,
        },
      ],
      configPath: join(dir, 'vdisk.json'),
      logPath: join(dir, 'vdisk.log'),
    });
    try {
      const ok = await qemuIo(vport, 'standby-disk0', ca.clientDir, ['write -P 0x31 0 4k', 'flush']);
      assert.equal(ok.code, 0, ok.stderr + ok.stdout);
      const no = await qemuIo(vport, 'standby-disk0', null, ['write -P 0x32 0 4k']);
      assert.notEqual(no.code, 0);
    } finally {
      await stopVdisk(id);
    }
    const back = await VhdImage.open(path);
    try {
      assert.deepEqual(await back.read(0, 4096), Buffer.alloc(4096, 0x31));
    } finally {
      await back.close();
    }
  });
});
