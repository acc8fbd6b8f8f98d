/**
 * Imports read only what the user gave them, tried the way an attacker would against a real
 * daemon: a host file by path, a symbolic link planted in the import directory, and uploads of
 * images that name host files (a VMDK extent, a qcow2 backing file, a differencing VHD whose
 * parent is a host VHD). Each is refused with its code and leaves no image or file behind.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { run } from '../../src/core/process.js';
import { createDifferencingVhd, createVhd } from '../../src/disk/vhd/create.js';

interface Task {
  id: string;
  operation: string;
  state: string;
  result: { name: string; path: string } | null;
  error: { code: string; message: string } | null;
}

let d: TestDaemon;
let work: string;
let operator: string;

before(async () => {
  d = await TestDaemon.start();
  work = await mkdtemp(join(tmpdir(), 'fd-sec-imp-'));
  operator = (await d.json<{ token: string }>(['token', 'create', 'ops', '--role', 'operator'])).token;
});
after(async () => {
  await d?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

/** What a refused import must leave as it was: image records and the images directory. */
async function footprint(): Promise<{ images: string[]; files: string[]; uploads: string[] }> {
  const images = (await d.json<{ name: string }[]>(['image', 'list'])).map((i) => i.name).sort();
  const files = (await readdir(join(d.dataDir, 'images')).catch(() => [])).sort();
  const uploads = (await readdir(join(d.dataDir, 'images', '.uploads')).catch(() => [])).sort();
  return { images, files, uploads };
}

async function upload(name: string, file: string, token = d.token): Promise<{ status: number; body: Task }> {
  const res = await fetch(`${d.url}/api/v1/images/${name}/upload?wait=true`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
    body: await readFile(file),
  });
  return { status: res.status, body: (await res.json()) as Task };
}

test('import by path: /etc/shadow is refused, for an admin (outside the import dirs) and an operator', async () => {
  const fp = await footprint();
  const admin = await d.api('POST', '/api/v1/images', { file: '/etc/shadow', name: 'shadow' });
  assert.equal(admin.status, 403, JSON.stringify(admin.body));
  assert.match(JSON.stringify(admin.body), /FD_PATH_NOT_ALLOWED/);
  // Through a path that starts inside the import directory and climbs out of it.
  const climb = await d.api('POST', '/api/v1/images', {
    file: join(d.dataDir, 'import', '..', '..', '..', 'etc', 'shadow'),
    name: 'shadow',
  });
  assert.match(JSON.stringify(climb.body), /FD_PATH_NOT_ALLOWED/);
  const op = await d.api('POST', '/api/v1/images', { file: '/etc/shadow', name: 'shadow' }, operator);
  assert.equal(op.status, 403);
  assert.match(JSON.stringify(op.body), /FD_FORBIDDEN/);
  const ova = await d.api('POST', '/api/v1/appliances/actions/import', { file: '/etc/shadow' });
  assert.match(JSON.stringify(ova.body), /FD_PATH_NOT_ALLOWED/);
  const exp = await d.api('POST', '/api/v1/appliances/actions/export', { vms: 'x', out: '/etc/cron.d/x.ova' });
  assert.match(JSON.stringify(exp.body), /FD_PATH_NOT_ALLOWED/);
  assert.deepEqual(await footprint(), fp);
});

test('import by path: a symbolic link in the import directory is refused; a real file there imports', async () => {
  const dir = join(d.dataDir, 'import');
  await mkdir(dir, { recursive: true });
  await symlink('/etc/shadow', join(dir, 'shadow.raw'));
  const fp = await footprint();
  const r = await d.api('POST', '/api/v1/images', { file: join(dir, 'shadow.raw'), name: 'linked' });
  assert.match(JSON.stringify(r.body), /FD_IMPORT_SYMLINK/);
  assert.deepEqual(await footprint(), fp);

  const good = join(dir, 'ok.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', good, '4M']);
  const ok = await d.json<Task>(['image', 'import', good, '--name', 'by-path']);
  assert.equal(ok.state, 'succeeded', JSON.stringify(ok.error));
  assert.equal(ok.operation, 'image.import', 'read where it is, not uploaded');
  // The local CLI uploads what the daemon may not read by path (read with the user's rights).
  const elsewhere = join(work, 'elsewhere.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', elsewhere, '4M']);
  const up = await d.json<Task>(['image', 'import', elsewhere, '--name', 'by-upload']);
  assert.equal(up.state, 'succeeded', JSON.stringify(up.error));
  assert.equal(up.operation, 'image.upload');
});

test('uploads that name host files (VMDK extent, qcow2 backing file, VHD parent) are refused', async () => {
  const vmdk = join(work, 'extent.vmdk');
  await writeFile(
    vmdk,
    '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 1 FLAT "/etc/shadow" 0\n',
  );
  const relative = join(work, 'relative.vmdk');
  await writeFile(
    relative,
    '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 1 FLAT "../../token" 0\n',
  );
  const qcow = join(work, 'backed.qcow2');
  await run('qemu-img', ['create', '-q', '-u', '-f', 'qcow2', '-b', join(d.dataDir, 'token'), '-F', 'raw', qcow, '1M']);
  const parent = join(work, 'host-parent.vhd');
  await createVhd(parent, { sizeBytes: 1024 * 1024 });
  const child = join(work, 'child.vhd');
  await createDifferencingVhd(child, parent);

  const fp = await footprint();
  for (const [file, kind] of [
    [vmdk, 'vmdk-extent'],
    [relative, 'vmdk-extent'],
    [qcow, 'qcow2-backing-file'],
    [child, 'vhd-parent'],
  ] as const) {
    const r = await upload('evil', file, operator);
    assert.equal(r.body.state, 'failed', `${file}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error?.code, 'FD_DISK_EXTERNAL_REFERENCE', `${file}: ${JSON.stringify(r.body.error)}`);
    assert.match(r.body.error.message, new RegExp(kind));
    assert.deepEqual(await footprint(), fp, `${file} left something behind`);
  }
});
