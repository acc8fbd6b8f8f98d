/**
 * OVAs end to end: export one (our VMDK writer, OVF writer, tar writer), check it the way other
 * tools would (tar, sha256, xmllint, qemu-img), and import it back by streaming each disk
 * straight out of the archive into a VHD, never extracting it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isFdError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import { openRawSource, writeStreamOptimizedVmdk } from '../../src/disk/vmdk/stream-writer.js';
import { streamVmdkToVhd } from '../../src/disk/vmdk/to-vhd.js';
import type { OvfVirtualSystem } from '../../src/ovf/model.js';
import { exportOva, writeOva } from '../../src/ovf/ova-writer.js';
import { readPackage } from '../../src/ovf/package.js';
import { parseOvf } from '../../src/ovf/parse.js';
import { TarWriter } from '../../src/ovf/tar-writer.js';
import { validatePackage } from '../../src/ovf/validate.js';
import { writeOvf, type OvfWriteModel } from '../../src/ovf/writer.js';
import { withTempDir } from './helpers.js';

const MiB = 2 ** 20;

function model(diskSizes: number[], withIso = false): OvfWriteModel {
  const vs: OvfVirtualSystem = {
    kind: 'VirtualSystem',
    id: 'web',
    name: 'web',
    os: { cimId: 96, name: 'Debian 64-Bit' },
    vcpus: 2,
    memoryBytes: 512 * MiB,
    controllers: [
      { instanceId: 'c1', kind: 'scsi', subtype: 'lsilogic' },
      { instanceId: 'c2', kind: 'ide' },
    ],
    disks: diskSizes.map((_, i) => ({
      instanceId: `d${i}`,
      diskId: `disk${i}`,
      controllerId: 'c1',
      addressOnParent: String(i),
    })),
    nics: [{ instanceId: 'n1', network: 'lan', adapterType: 'VirtualE1000', connected: true }],
    // A drive that held a packaged ISO in the imported appliance: exported empty.
    drives: withIso
      ? [{ instanceId: 'cd', kind: 'cdrom', controllerId: 'c2', addressOnParent: '0', fileRef: 'iso1' }]
      : [],
    devices: [],
    products: [],
    eulas: [],
    extensions: [],
  };
  return {
    files: [],
    disks: diskSizes.map((s, i) => ({ diskId: `disk${i}`, capacityBytes: s, formatKind: 'vmdk-streamOptimized' })),
    networks: [{ name: 'lan' }],
    configurations: [],
    entity: vs,
  };
}

async function rawWithData(path: string, sizeBytes: number, seed: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    await fh.write(randomBytes(MiB + seed), 0, MiB + seed, 2 * MiB);
  } finally {
    await fh.close();
  }
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('an exported OVA is canonical, verifiable by standard tools, and imports back byte-identical', async () => {
  await withTempDir(async (dir) => {
    const raws = [join(dir, 'a.raw'), join(dir, 'b.raw')];
    await rawWithData(raws[0]!, 16 * MiB, 1);
    await rawWithData(raws[1]!, 8 * MiB + 4096, 2);
    const sources = await Promise.all(raws.map((r) => openRawSource(r)));
    const ova = join(dir, 'app.ova');
    try {
      await exportOva(
        ova,
        model([16 * MiB, 8 * MiB + 4096], true),
        sources.map((s, i) => ({ diskId: `disk${i}`, source: s })),
      );
    } finally {
      await Promise.all(sources.map((s) => s.close()));
    }

    // Member order: descriptor, manifest, disks in References order.
    const list = (await run('tar', ['tf', ova])).stdout.trim().split('\n');
    assert.deepEqual(list, ['app.ovf', 'app.mf', 'app-disk1.vmdk', 'app-disk2.vmdk']);

    // The manifest's SHA256 lines match what sha256 of each extracted member says.
    await run('tar', ['-C', dir, '-xf', ova]);
    const mf = await readFile(join(dir, 'app.mf'), 'utf8');
    for (const name of ['app.ovf', 'app-disk1.vmdk', 'app-disk2.vmdk']) {
      assert.ok(mf.includes(`SHA256(${name})= ${sha256(await readFile(join(dir, name)))}\n`), name);
    }
    // The descriptor passes the DMTF schema, and each VMDK qemu-img check and compare.
    const xsd = await run('xmllint', ['--noout', '--nonet', '--schema', schemaPath(), join(dir, 'app.ovf')], {
      allowFail: true,
    });
    assert.equal(xsd.code, 0, xsd.stderr);
    for (const [i, raw] of raws.entries()) {
      const vmdk = join(dir, `app-disk${i + 1}.vmdk`);
      assert.equal((await run('qemu-img', ['check', vmdk], { allowFail: true })).code, 0);
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', raw, vmdk], { allowFail: true });
      assert.equal(cmp.code, 0, cmp.stdout);
    }
    assert.deepEqual((await validatePackage(ova)).problems, []);

    // Import: each disk streams out of the tar straight into a VHD.
    const vhds: string[] = [];
    const report = await readPackage(ova, {
      onFile: async (f) => {
        const out = join(dir, `${f.file.id}.vhd`);
        await streamVmdkToVhd(f.body, out, { source: f.file.href });
        vhds.push(out);
      },
    });
    assert.deepEqual(
      report.members.map((m) => [m.name, m.verified]),
      [
        ['app.ovf', 'sha256'],
        ['app.mf', undefined],
        ['app-disk1.vmdk', 'sha256'],
        ['app-disk2.vmdk', 'sha256'],
      ],
    );
    const vs = report.envelope.entity as OvfVirtualSystem;
    assert.equal(vs.vcpus, 2);
    assert.equal(vs.memoryBytes, 512 * MiB);
    assert.deepEqual(
      vs.drives.map((d) => [d.kind, d.fileRef]),
      [['cdrom', undefined]],
      'the ISO is not exported, so its drive comes out empty',
    );
    assert.deepEqual(
      report.envelope.disks.map((d) => d.capacityBytes),
      [16 * MiB, 8 * MiB + 4096],
    );
    for (const [i, raw] of raws.entries()) {
      const cmp = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, vhds[i]!], { allowFail: true });
      assert.equal(cmp.code, 0, cmp.stdout);
    }
  });
});

function schemaPath(): string {
  return join(
    new URL('.', import.meta.url).pathname,
    '..',
    '..',
    '..',
    'src',
    'ovf',
    'schemas',
    'ovf-1.1.1',
    'dsp8023_1.1.1.xsd',
  );
}

test('a manifest mismatch names the damaged file; collected, it is one problem line', async () => {
  await withTempDir(async (dir) => {
    // Small members are hashed inline, big ones on the digest worker: both must catch it.
    for (const size of [5000, 3 * MiB]) {
      const disk = join(dir, 'd.vmdk');
      await writeFile(disk, randomBytes(size));
      const m = model([MiB]);
      const descriptor = writeOvf({
        ...m,
        files: [{ id: 'f1', href: 'd.vmdk', sizeBytes: size }],
        disks: [{ ...m.disks[0]!, fileRef: 'f1' }],
      });
      const ova = join(dir, `bad-${size}.ova`);
      await writeOva(ova, {
        descriptorName: 'bad.ovf',
        descriptor,
        files: [{ name: 'd.vmdk', path: disk, sha256: 'e'.repeat(64) }],
      });
      await assert.rejects(
        readPackage(ova),
        (e) => isFdError(e, 'FD_OVF_MANIFEST_MISMATCH') && e.message.startsWith('d.vmdk: SHA256 is '),
      );
      const v = await validatePackage(ova);
      assert.equal(v.problems.length, 1);
      assert.match(v.problems[0]!, /^FD_OVF_MANIFEST_MISMATCH: d\.vmdk: /);
    }
  });
});

test('an OVA member that climbs out with ".." is refused, and nothing is handed to the importer', async () => {
  await withTempDir(async (dir) => {
    const ova = join(dir, 'evil.ova');
    const fh = await open(ova, 'w');
    const tar = new TarWriter(fh);
    const m = model([MiB]);
    await tar.addBuffer('evil.ovf', Buffer.from(writeOvf({ ...m, files: [{ id: 'f1', href: 'x.vmdk' }] })));
    await tar.addBuffer('../x.vmdk', Buffer.alloc(10));
    await tar.finish();
    await fh.close();
    let handed = 0;
    await assert.rejects(readPackage(ova, { onFile: async () => void handed++ }), (e) =>
      isFdError(e, 'FD_OVA_UNSAFE_MEMBER'),
    );
    assert.equal(handed, 0);
  });
});

test('gzip-compressed and chunked files arrive gunzipped and joined, digests checked per member', async () => {
  await withTempDir(async (dir) => {
    const payload = randomBytes(300_000);
    const gz = gzipSync(payload);
    const chunkSize = 100_000;
    const chunks = Array.from({ length: Math.ceil(gz.length / chunkSize) }, (_, i) =>
      gz.subarray(i * chunkSize, (i + 1) * chunkSize),
    );
    const m = model([MiB]);
    const descriptor = writeOvf({
      ...m,
      files: [{ id: 'f1', href: 'd.img', sizeBytes: gz.length, compression: 'gzip', chunkSizeBytes: chunkSize }],
      disks: [{ ...m.disks[0]!, fileRef: 'f1', formatKind: 'raw' }],
    });
    const files = await Promise.all(
      chunks.map(async (c, i) => {
        const name = `d.img.${String(i).padStart(9, '0')}`;
        await writeFile(join(dir, name), c);
        return { name, path: join(dir, name) };
      }),
    );
    const ova = join(dir, 'gz.ova');
    await writeOva(ova, { descriptorName: 'gz.ovf', descriptor, files });
    // The same package as a directory: descriptor + manifest + chunk files.
    await run('tar', ['-C', dir, '-xf', ova, 'gz.ovf', 'gz.mf']);
    for (const path of [ova, join(dir, 'gz.ovf')]) {
      const got: Buffer[] = [];
      const r = await readPackage(path, {
        onFile: async (f) => {
          for await (const c of f.body) got.push(c);
        },
      });
      assert.deepEqual(Buffer.concat(got), payload, path);
      assert.deepEqual(r.problems, []);
      assert.equal(r.members.filter((x) => x.verified === 'sha256').length, 1 + chunks.length, path);
    }
  });
});

test('OVF 2.x export parses back to the same hardware', async () => {
  const m = model([4 * MiB]);
  const env = parseOvf(writeOvf({ ...m, disks: [{ ...m.disks[0]! }] }, { ovfVersion: 2 }));
  assert.equal(env.version, '2.x');
  const vs = env.entity as OvfVirtualSystem;
  assert.equal(vs.vcpus, 2);
  assert.equal(vs.memoryBytes, 512 * MiB);
  assert.equal(vs.os?.name, 'Debian 64-Bit');
  assert.deepEqual(
    vs.nics.map((n) => [n.network, n.adapterType]),
    [['lan', 'VirtualE1000']],
  );
  assert.equal(env.disks[0]!.capacityBytes, 4 * MiB);
  assert.deepEqual(env.problems, []);
});

test('a reader that stops early still gets the member drained and verified', async () => {
  await withTempDir(async (dir) => {
    const disk = join(dir, 'd.bin');
    await writeFile(disk, randomBytes(3 * MiB));
    const m = model([MiB]);
    const descriptor = writeOvf({
      ...m,
      files: [{ id: 'f1', href: 'd.bin', sizeBytes: 3 * MiB }],
      disks: [{ ...m.disks[0]!, fileRef: 'f1' }],
    });
    const ova = join(dir, 'p.ova');
    await writeOva(ova, { descriptorName: 'p.ovf', descriptor, files: [{ name: 'd.bin', path: disk }] });
    const r = await readPackage(ova, {
      onFile: async (f) => {
        for await (const _ of f.body) break;
      },
    });
    assert.equal(r.members.find((x) => x.name === 'd.bin')?.verified, 'sha256');
  });
});

test('a signed OVA (.cert after the manifest) reports its signer; a forged signature is a problem', async () => {
  await withTempDir(async (dir) => {
    const key = join(dir, 'k.pem');
    const crt = join(dir, 'c.pem');
    await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      key,
      '-out',
      crt,
      '-days',
      '2',
      '-subj',
      '/CN=appliance vendor',
    ]);
    const descriptor = Buffer.from(writeOvf(model([])));
    const manifest = Buffer.from(`SHA256(s.ovf)= ${sha256(descriptor)}\n`);
    const build = async (name: string, signedText: Buffer): Promise<string> => {
      await writeFile(join(dir, 'signed.mf'), signedText);
      const sig = (
        await run('openssl', ['dgst', '-sha256', '-sign', key, '-hex', join(dir, 'signed.mf')])
      ).stdout.trim();
      const cert = `SHA256(s.mf)= ${sig.split('= ').pop()}\n${await readFile(crt, 'utf8')}`;
      const ova = join(dir, name);
      const fh = await open(ova, 'w');
      const tar = new TarWriter(fh);
      await tar.addBuffer('s.ovf', descriptor);
      await tar.addBuffer('s.mf', manifest);
      await tar.addBuffer('s.cert', Buffer.from(cert));
      await tar.finish();
      await fh.close();
      return ova;
    };
    const good = await readPackage(await build('good.ova', manifest));
    assert.match(good.certificate?.subject ?? '', /CN=appliance vendor/);
    const forged = await validatePackage(await build('forged.ova', Buffer.from('SHA256(other)= 00\n')));
    assert.equal(forged.problems.length, 1);
    assert.match(forged.problems[0]!, /^FD_OVF_SIGNATURE_INVALID: s\.cert: /);
  });
});

test('a manifest after the disks (older VirtualBox order) still verifies every member', async () => {
  await withTempDir(async (dir) => {
    const disk = randomBytes(70_000);
    const m = model([MiB]);
    const descriptor = Buffer.from(
      writeOvf({
        ...m,
        files: [{ id: 'f1', href: 'd.vmdk', sizeBytes: disk.length }],
        disks: [{ ...m.disks[0]!, fileRef: 'f1' }],
      }),
    );
    const sha1 = (b: Buffer): string => createHash('sha1').update(b).digest('hex');
    for (const [name, diskDigest] of [
      ['late.ova', sha1(disk)],
      ['late-bad.ova', sha1(Buffer.from('other'))],
    ] as const) {
      const ova = join(dir, name);
      const fh = await open(ova, 'w');
      const tar = new TarWriter(fh);
      await tar.addBuffer('v.ovf', descriptor);
      await tar.addBuffer('d.vmdk', disk);
      await tar.addBuffer('v.mf', Buffer.from(`SHA1(v.ovf)= ${sha1(descriptor)}\nSHA1(d.vmdk)= ${diskDigest}\n`));
      await tar.finish();
      await fh.close();
      const r = await validatePackage(ova);
      if (name === 'late.ova') assert.deepEqual(r.problems, []);
      else
        assert.deepEqual(
          r.problems.map((p) => p.slice(0, p.indexOf(' is '))),
          ['FD_OVF_MANIFEST_MISMATCH: d.vmdk: SHA1'],
        );
    }
  });
});

test('validate decodes streamOptimized disks: a corrupt grain and an understated capacity are problems', async () => {
  await withTempDir(async (dir) => {
    const raw = join(dir, 's.raw');
    await rawWithData(raw, 8 * MiB, 3);
    const vmdk = join(dir, 's.vmdk');
    const src = await openRawSource(raw);
    await writeStreamOptimizedVmdk(src, vmdk).finally(() => src.close());
    const good = await readFile(vmdk);
    const corrupt = Buffer.from(good);
    corrupt.fill(0xff, 128 * 512 + 12, 128 * 512 + 60); // inside the first grain's deflate data
    const bad = join(dir, 'bad.vmdk');
    await writeFile(bad, corrupt);
    const build = async (name: string, file: string, capacityBytes: number): Promise<string> => {
      const m = model([capacityBytes]);
      const descriptor = writeOvf({
        ...m,
        files: [{ id: 'f1', href: 'd.vmdk' }],
        disks: [{ ...m.disks[0]!, fileRef: 'f1' }],
      });
      const ova = join(dir, name);
      await writeOva(ova, { descriptorName: 'v.ovf', descriptor, files: [{ name: 'd.vmdk', path: file }] });
      return ova;
    };
    assert.deepEqual((await validatePackage(await build('ok.ova', vmdk, 8 * MiB))).problems, []);
    const corruptReport = await validatePackage(await build('corrupt.ova', bad, 8 * MiB));
    assert.deepEqual(
      corruptReport.problems.map((p) => p.slice(0, p.indexOf(':'))),
      ['FD_VMDK_BAD_GRAIN'],
    );
    const small = await validatePackage(await build('small.ova', vmdk, 4 * MiB));
    assert.deepEqual(small.problems, [
      'FD_OVF_CAPACITY_TOO_SMALL: Disk disk0: ovf:capacity 4194304 is smaller than the 8388608-byte disk in d.vmdk',
    ]);
  });
});
