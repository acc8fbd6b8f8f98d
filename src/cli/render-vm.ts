/** `vm show` and `vm logs` for people: a VM as a block and tables, a console as lines. */
import { formatSize } from '../core/units.js';
import { table } from './render.js';

interface ShownVm {
  id: string;
  name: string;
  state: string;
  desired: string;
  host?: string;
  pid?: number | null;
  cpus?: number;
  memoryBytes?: number;
  machine?: string;
  firmware?: string;
  boot?: string[];
  image?: string | null;
  kernelImage?: string | null;
  restartPolicy?: string;
  antiAffinity?: string | null;
  ha?: { enabled: boolean; priority: number; maxRestarts: number } | null;
  mirror?: string;
  lastError?: string | null;
  createdAt?: string;
  disks?: Array<{
    id: string;
    name?: string | null;
    format?: string | null;
    sizeBytes?: number | null;
    chain?: string[];
  }>;
  nics?: Array<{
    id: string;
    mac: string;
    network: string;
    bridge?: string | null;
    cidr?: string | null;
    ip?: string | null;
  }>;
  cdroms?: Array<{ id: string; image: string | null; path: string | null; bus: string }>;
}

const size = (n: number | null | undefined): string => (typeof n === 'number' ? formatSize(n) : '-');

function block(rows: [string, string | undefined][]): string {
  const shown = rows.filter((r): r is [string, string] => r[1] !== undefined && r[1] !== '');
  const w = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${(k + ':').padEnd(w + 1)} ${v}`).join('\n');
}

export function renderVmShow(result: unknown): string {
  const vm = result as ShownVm;
  const state = vm.state === vm.desired ? vm.state : `${vm.state} (should be ${vm.desired})`;
  const out = [
    block([
      ['name', vm.name],
      ['id', vm.id],
      ['state', `${state}${vm.host ? ` on ${vm.host}` : ''}${vm.pid ? `, pid ${vm.pid}` : ''}`],
      ['last error', vm.lastError ?? undefined],
      ['cpus', vm.cpus === undefined ? undefined : String(vm.cpus)],
      ['memory', vm.memoryBytes === undefined ? undefined : size(vm.memoryBytes)],
      [
        'machine',
        [vm.machine, vm.firmware, vm.boot?.length ? `boot ${vm.boot.join(',')}` : ''].filter(Boolean).join(', '),
      ],
      ['image', vm.image ?? vm.kernelImage ?? undefined],
      ['restart', vm.restartPolicy],
      [
        'ha',
        vm.ha ? (vm.ha.enabled ? `on, priority ${vm.ha.priority}, max ${vm.ha.maxRestarts} restarts` : 'off') : 'off',
      ],
      ['mirror', vm.mirror && vm.mirror !== '-' ? vm.mirror : undefined],
      ['anti-affinity', vm.antiAffinity ?? undefined],
      ['created', vm.createdAt],
    ]),
  ];
  if (vm.disks?.length) {
    out.push(
      '',
      'DISKS',
      table(
        vm.disks.map((d) => ({
          id: d.id,
          name: d.name ?? '-',
          format: d.format ?? '-',
          size: size(d.sizeBytes),
          chain: (d.chain ?? []).join(' -> ') || '-',
        })),
      ),
    );
  }
  if (vm.nics?.length) {
    out.push(
      '',
      'NICS',
      table(
        vm.nics.map((n) => ({
          id: n.id,
          mac: n.mac,
          network: n.network,
          bridge: n.bridge ?? '-',
          address: n.ip ? `${n.ip}${n.cidr ? ` (${n.cidr})` : ''}` : '-',
        })),
      ),
    );
  }
  if (vm.cdroms?.length) {
    out.push(
      '',
      'CD-ROMS',
      table(vm.cdroms.map((c) => ({ id: c.id, image: c.image ?? '-', bus: c.bus, path: c.path ?? '-' }))),
    );
  }
  return out.join('\n');
}

/** Printable text of a console line: carriage returns and terminal escapes dropped. */
export function printable(line: string): string {
  return line.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}

export function renderVmLogs(result: unknown): string {
  const r = result as { serial: string[]; qemu: string[] };
  return [
    '--- serial console ---',
    ...(r.serial.length ? r.serial.map(printable) : ['(nothing yet)']),
    '--- qemu ---',
    ...(r.qemu.length ? r.qemu.map(printable) : ['(nothing)']),
  ].join('\n');
}

/** Renderers for people, by operation name (the default renders every other result). */
export const RENDERERS: Record<string, (result: unknown) => string> = {
  'vm.show': renderVmShow,
  'vm.logs': renderVmLogs,
};
