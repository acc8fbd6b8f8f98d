/**
 * The text descriptor embedded in a sparse VMDK: createType, extents and the disk database.
 * We read what a converter needs and write the minimal one VMware and qemu accept.
 */
import { randomBytes } from 'node:crypto';

export interface VmdkDescriptor {
  createType?: string;
  cid?: string;
  extents: { access: string; sectors: number; type: string; file?: string }[];
  ddb: Record<string, string>;
}

export function parseDescriptor(text: string): VmdkDescriptor {
  const d: VmdkDescriptor = { extents: [], ddb: {} };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\0.*$/, '').trim();
    if (!line || line.startsWith('#')) continue;
    const ext = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?/.exec(line);
    if (ext) {
      d.extents.push({ access: ext[1]!, sectors: Number(ext[2]), type: ext[3]!, ...(ext[4] ? { file: ext[4] } : {}) });
      continue;
    }
    const kv = /^([\w.]+)\s*=\s*"?([^"]*)"?$/.exec(line);
    if (!kv) continue;
    if (kv[1] === 'createType') d.createType = kv[2]!;
    else if (kv[1] === 'CID') d.cid = kv[2]!;
    else if (kv[1]!.startsWith('ddb.')) d.ddb[kv[1]!] = kv[2]!;
  }
  return d;
}

/** A streamOptimized descriptor; geometry follows VMware's rule for SCSI disks (255/63). */
export function streamOptimizedDescriptor(capacitySectors: number, fileName: string, adapterType = 'lsilogic'): string {
  const cylinders = Math.min(65535, Math.max(1, Math.floor(capacitySectors / (255 * 63))));
  return [
    '# Disk DescriptorFile',
    'version=1',
    'encoding="UTF-8"',
    `CID=${randomBytes(4).toString('hex')}`,
    'parentCID=ffffffff',
    'createType="streamOptimized"',
    '',
    '# Extent description',
    `RW ${capacitySectors} SPARSE "${fileName.replace(/"/g, '')}"`,
    '',
    '# The Disk Data Base',
    '#DDB',
    '',
    'ddb.virtualHWVersion = "4"',
    `ddb.geometry.cylinders = "${cylinders}"`,
    'ddb.geometry.heads = "255"',
    'ddb.geometry.sectors = "63"',
    `ddb.adapterType = "${adapterType}"`,
    'ddb.toolsVersion = "2147483647"',
    '',
  ].join('\n');
}
