import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isFdError } from '../core/errors.js';
import { run } from '../core/process.js';
import { withTempDir } from '../../test/ovf/helpers.js';
import { readTar } from './tar-reader.js';

/** A raw ustar header, so tests can forge what no honest tool writes. */
function header(name: string, size: number, type = '0', opts: { magic?: string; sizeField?: string } = {}): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'utf8');
  b.write('0000644\0', 100, 'latin1');
  b.write(opts.sizeField ?? size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  b.write('00000000000\0', 136, 'latin1');
  b.write(type, 156, 'latin1');
  b.write(opts.magic ?? 'ustar\x0000', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

function member(name: string, data: Buffer, type = '0'): Buffer {
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([header(name, data.length, type), data, pad]);
}

const END = Buffer.alloc(1024);

async function names(archive: Buffer, totalBytes?: number): Promise<{ name: string; data: string }[]> {
  const out: { name: string; data: string }[] = [];
  for await (const e of readTar([archive], { source: 't.ova', ...(totalBytes !== undefined ? { totalBytes } : {}) })) {
    const chunks: Buffer[] = [];
    for await (const c of e.body()) chunks.push(c);
    out.push({ name: e.name, data: Buffer.concat(chunks).toString() });
  }
  return out;
}

const code = (c: string) => (e: unknown) => isFdError(e, c as `FD_${string}`);

test('plain members stream in order with their bytes', async () => {
  const tar = Buffer.concat([member('a.ovf', Buffer.from('<x/>')), member('b.vmdk', Buffer.alloc(1000, 7)), END]);
  const got = await names(tar);
  assert.deepEqual(
    got.map((g) => [g.name, g.data.length]),
    [
      ['a.ovf', 4],
      ['b.vmdk', 1000],
    ],
  );
});

test('absolute paths, "..", and links are refused as unsafe members', async () => {
  for (const [name, type] of [
    ['/etc/passwd', '0'],
    ['../evil.vmdk', '0'],
    ['ok/../../evil', '0'],
    ['C:\\evil', '0'],
    ['link.vmdk', '2'],
    ['hard.vmdk', '1'],
    ['dev', '3'],
    ['fifo', '6'],
  ] as const) {
    const tar = Buffer.concat([member('a.ovf', Buffer.from('<x/>')), member(name, Buffer.alloc(0), type), END]);
    await assert.rejects(names(tar), code('FD_OVA_UNSAFE_MEMBER'), `${name} (type ${type})`);
  }
});

test('a member claiming more bytes than the archive holds is refused before reading it', async () => {
  const tar = Buffer.concat([header('big.vmdk', 1 << 30), Buffer.alloc(512), END]);
  await assert.rejects(names(tar, tar.length), code('FD_OVA_UNSAFE_MEMBER'));
  // Streaming without a known size: the lie shows up as a truncated archive.
  await assert.rejects(names(tar), code('FD_OVA_TRUNCATED'));
});

test('a pax path with ".." is refused like a ustar one', async () => {
  const rec = '22 path=../../etc/evil\n';
  const tar = Buffer.concat([member('PaxHeader', Buffer.from(rec), 'x'), member('innocent', Buffer.alloc(1)), END]);
  await assert.rejects(names(tar), code('FD_OVA_UNSAFE_MEMBER'));
});

test('a damaged header checksum is FD_OVA_BAD_TAR; a non-tar start is FD_OVA_NOT_TAR', async () => {
  const good = member('a.ovf', Buffer.from('<x/>'));
  const bad = Buffer.from(member('b', Buffer.alloc(1)));
  bad[0] = 0x41;
  await assert.rejects(names(Buffer.concat([good, bad, END])), code('FD_OVA_BAD_TAR'));
  await assert.rejects(names(Buffer.from('\x89PNG\r\n\x1a\n'.padEnd(2048, 'x'))), code('FD_OVA_NOT_TAR'));
});

test('GNU long names and pax headers written by GNU tar are read', async () => {
  await withTempDir(async (dir) => {
    const long = `${'n'.repeat(120)}.vmdk`;
    await mkdir(join(dir, 'src'));
    await writeFile(join(dir, 'src', long), 'long-name-data');
    await writeFile(join(dir, 'src', 'small.ovf'), '<x/>');
    for (const format of ['gnu', 'pax', 'ustar']) {
      const out = join(dir, `${format}.tar`);
      const files = format === 'ustar' ? ['small.ovf'] : ['small.ovf', long];
      await run('tar', ['-C', join(dir, 'src'), `--format=${format}`, '-cf', out, ...files]);
      const got: { name: string; data: string }[] = [];
      const { size } = await stat(out);
      for await (const e of readTar(createReadStream(out), { source: out, totalBytes: size })) {
        const chunks: Buffer[] = [];
        for await (const c of e.body()) chunks.push(c);
        got.push({ name: e.name, data: Buffer.concat(chunks).toString() });
      }
      assert.deepEqual(
        got,
        files.map((n) => ({ name: n, data: n === long ? 'long-name-data' : '<x/>' })),
        format,
      );
    }
  });
});

test('unread member bodies are skipped so the next member lines up', async () => {
  const tar = Buffer.concat([member('a', Buffer.alloc(700, 1)), member('b', Buffer.from('B')), END]);
  const seen: string[] = [];
  for await (const e of readTar([tar])) {
    if (e.name === 'b') for await (const c of e.body()) seen.push(c.toString());
  }
  assert.deepEqual(seen, ['B']);
});
