import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgv } from './argv.js';
import { parseVmSpec } from './spec.js';
import { vmRunPaths } from './run-paths.js';

const devicesOf = (cdroms: unknown[]): string[] => {
  const spec = parseVmSpec(
    {
      name: 'cd',
      uuid: '6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f',
      memoryBytes: 128 * 1024 * 1024,
      boot: { order: ['cdrom', 'disk'] },
      cdroms,
    },
    { checkFiles: false },
  );
  const a = buildQemuArgv(spec, { paths: vmRunPaths('/run/fd/cd'), accel: 'tcg' });
  return a.flatMap((v, i) => (a[i - 1] === '-device' ? [v] : []));
};

test('a scsi CD-ROM sits on one virtio-scsi controller; a sata one stays on AHCI', () => {
  const devs = devicesOf([
    { id: 'inst', iso: '/inst.iso' },
    { id: 'seed', iso: '/seed.iso', bus: 'scsi' },
  ]);
  assert.equal(devs.filter((d) => d.startsWith('virtio-scsi-pci')).length, 1);
  assert.ok(
    devs.some((d) => d.startsWith('ide-cd,id=cd-inst,bus=ide.0,drive=cdm-inst,bootindex=1')),
    devs.join(' '),
  );
  assert.ok(
    devs.some((d) => d.startsWith('scsi-cd,id=cd-seed,bus=scsi0.0,drive=cdm-seed')),
    devs.join(' '),
  );
  assert.equal(devicesOf([{ id: 'inst', iso: '/inst.iso' }]).filter((d) => d.startsWith('virtio-scsi-pci')).length, 0);
});
