import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseVmSpec, type SpecProblem } from './spec.js';
import { isFdError } from '../core/errors.js';

const UUID = '6f1c2b1e-8a0d-4b7e-9a51-2c3d4e5f6a7b';

function problemsOf(input: unknown, checkFiles = false): SpecProblem[] {
  try {
    parseVmSpec(input, { checkFiles });
  } catch (e) {
    assert.ok(isFdError(e, 'FD_VM_SPEC_INVALID'), String(e));
    return (e.details as { problems: SpecProblem[] }).problems;
  }
  return [];
}

test('a minimal spec gets the documented defaults', () => {
  const s = parseVmSpec({ name: 'web-1', uuid: UUID, memoryBytes: 256 * 1024 * 1024 });
  assert.equal(s.machine, 'q35');
  assert.equal(s.firmware, 'bios');
  assert.equal(s.vcpus, 1);
  assert.deepEqual(s.boot, { order: ['disk'] });
  assert.equal(s.restartPolicy, 'never');
  assert.deepEqual(s.disks, []);
  assert.equal(s.serial, true);
});

test('unknown fields are rejected, at the top and inside devices', () => {
  const p = problemsOf({
    name: 'a',
    uuid: UUID,
    memoryBytes: 64 << 20,
    memroy: 1,
    disks: [{ id: 'd0', source: { kind: 'raw', path: '/x' }, cache: 'none' }],
  });
  const byPath = new Map(p.map((x) => [x.path, x.message]));
  assert.deepEqual([...byPath.keys()].sort(), ['(spec)', 'disks.0']);
  assert.match(byPath.get('(spec)')!, /memroy/);
  assert.match(byPath.get('disks.0')!, /cache/);
});

test('every problem is reported at once: memory, duplicate MAC, duplicate id, missing files', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fd-spec-'));
  try {
    const present = join(dir, 'present.raw');
    await writeFile(present, Buffer.alloc(512));
    const p = problemsOf(
      {
        name: 'bad',
        uuid: UUID,
        memoryBytes: 16 << 20,
        disks: [
          { id: 'd0', source: { kind: 'raw', path: present } },
          { id: 'd1', source: { kind: 'vhd', path: join(dir, 'missing.vhd') } },
        ],
        nics: [
          { id: 'n0', mac: '52:54:00:00:00:01', network: { kind: 'user' } },
          { id: 'n1', mac: '52:54:00:00:00:01', network: { kind: 'bridge', bridge: 'br0' } },
        ],
      },
      true,
    );
    // memory is a schema problem: reported before file checks can run, so check it alone
    assert.deepEqual(
      p.map((x) => x.path),
      ['memoryBytes'],
    );
    assert.match(p[0]!.message, /at least 32 MiB/);
    const q = problemsOf(
      {
        name: 'bad',
        uuid: UUID,
        memoryBytes: 64 << 20,
        disks: [
          { id: 'd0', source: { kind: 'raw', path: present } },
          { id: 'd1', source: { kind: 'vhd', path: join(dir, 'missing.vhd') } },
        ],
        cdroms: [{ id: 'd0', iso: null }],
        nics: [
          { id: 'n0', mac: '52:54:00:00:00:01', network: { kind: 'user' } },
          { id: 'n1', mac: '52:54:00:00:00:01', network: { kind: 'bridge', bridge: 'br0' } },
        ],
      },
      true,
    );
    assert.deepEqual(q.map((x) => x.path).sort(), ['cdroms.0.id', 'disks.1.source.path', 'nics.1.mac']);
    assert.match(q.find((x) => x.path === 'nics.1.mac')!.message, /already used by nics\.0/);
    assert.match(q.find((x) => x.path === 'disks.1.source.path')!.message, /missing\.vhd does not exist/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the error message names every problem so a person can fix them in one pass', () => {
  assert.throws(
    () =>
      parseVmSpec({
        name: 'x',
        uuid: 'not-a-uuid',
        memoryBytes: 1,
        nics: [{ id: 'n0', mac: '53:54:00:00:00:01', network: { kind: 'user' } }],
      }),
    (e) => {
      assert.ok(isFdError(e, 'FD_VM_SPEC_INVALID'));
      assert.match(e.message, /uuid/);
      assert.match(e.message, /memoryBytes: memory must be at least 32 MiB/);
      assert.match(e.message, /nics\.0\.mac: a NIC MAC must be unicast/);
      return true;
    },
  );
});

test('kernel boot and user networking with port forwards parse', () => {
  const s = parseVmSpec(
    {
      name: 'k',
      uuid: UUID,
      memoryBytes: 128 << 20,
      boot: { kernel: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd', cmdline: 'console=ttyS0' } },
      nics: [
        { id: 'n0', mac: '52:54:00:AA:00:01', network: { kind: 'user', hostfwd: [{ hostPort: 2222, guestPort: 22 }] } },
      ],
    },
    { checkFiles: false },
  );
  assert.equal(s.nics[0]!.mac, '52:54:00:aa:00:01');
  assert.deepEqual(s.nics[0]!.network, {
    kind: 'user',
    hostfwd: [{ protocol: 'tcp', hostAddr: '127.0.0.1', hostPort: 2222, guestPort: 22 }],
  });
});
