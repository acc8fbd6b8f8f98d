/** `flightdeck disk ...`: local VHD tools that work on files, no daemon needed. */
import { argString, defineCommand, optBool, optString, type CommandDef } from '../command.js';
import { FdError } from '../../core/errors.js';
import { formatSize, parseSize } from '../../core/units.js';
import { convertDisk, CONVERT_TARGETS, type ConvertTarget } from '../../disk/convert.js';
import { checkVhd, type CheckResult } from '../../disk/vhd/check.js';
import { createDifferencingVhd, createVhd } from '../../disk/vhd/create.js';
import { diskInfo } from '../../disk/vhd/info.js';
import { mergeVhd } from '../../disk/vhd/merge.js';
import { rebuildDynamic } from '../../disk/vhd/rebuild.js';
import { resizeVhd } from '../../disk/vhd/resize.js';
import { probeFormat } from '../../disk/open.js';

function badArgs(message: string, verb: string): FdError {
  return new FdError('FD_CLI_BAD_ARGS', message, { hint: `see "flightdeck disk ${verb} --help"` });
}

const create = defineCommand({
  noun: 'disk',
  verb: 'create',
  summary: 'create a VHD (dynamic by default), or a differencing child with --parent',
  args: [{ name: 'path', description: 'the new image file', required: true }],
  options: {
    size: { type: 'string', description: 'virtual size (512M, 20G, bytes)', value: 'SIZE' },
    type: { type: 'string', description: 'dynamic (default) or fixed', value: 'TYPE' },
    azure: { type: 'boolean', description: 'what Azure accepts: fixed, size rounded up to whole MiB' },
    parent: { type: 'string', description: 'make a differencing child of this image', value: 'PARENT' },
  },
  async run(_ctx, input) {
    const path = argString(input, 'path');
    const parent = optString(input, 'parent');
    const size = optString(input, 'size');
    const type = optString(input, 'type');
    if (parent) {
      if (size || type || optBool(input, 'azure')) {
        throw badArgs('--parent takes its size and type from the parent; drop --size/--type/--azure', 'create');
      }
      return createDifferencingVhd(path, parent);
    }
    if (!size) throw badArgs('--size is required (or --parent for a differencing child)', 'create');
    if (type !== undefined && type !== 'dynamic' && type !== 'fixed') {
      throw badArgs(`--type must be dynamic or fixed, not "${type}"`, 'create');
    }
    return createVhd(path, {
      sizeBytes: parseSize(size),
      ...(type ? { type } : {}),
      azure: optBool(input, 'azure'),
    });
  },
});

const info = defineCommand({
  noun: 'disk',
  verb: 'info',
  summary: 'show format, type, sizes, creator and parent chain of an image',
  args: [{ name: 'path', description: 'image file', required: true }],
  run: (_ctx, input) => diskInfo(argString(input, 'path')),
  render(r) {
    const lines = [
      `path:         ${r.path}`,
      `format:       ${r.format}${r.format === 'vhd' ? ` (${r.type})` : ''}`,
      `virtual size: ${formatSize(r.virtualSize)} (${r.virtualSize} bytes)`,
      `file size:    ${formatSize(r.fileSize)} (${r.fileSize} bytes)`,
    ];
    if (r.blockSize) lines.push(`block size:   ${formatSize(r.blockSize)}`);
    if (r.creatorApp !== null) lines.push(`creator app:  "${r.creatorApp}"`);
    if (r.uuid) lines.push(`uuid:         ${r.uuid}`);
    if (r.vhd) {
      const g = r.vhd.geometry;
      lines.push(`geometry:     ${g.cylinders}/${g.heads}/${g.sectorsPerTrack} (size from ${r.vhd.sizeFrom})`);
      if (r.vhd.totalBlocks !== null)
        lines.push(`blocks:       ${r.vhd.allocatedBlocks} of ${r.vhd.totalBlocks} allocated`);
      if (r.vhd.footerCopyUsed)
        lines.push('warning:      trailing footer missing; run "flightdeck disk check --repair"');
    }
    if (r.parent) lines.push(`parent:       ${r.parent}`);
    if (r.chain.length > 1) lines.push(`chain:        ${r.chain.join(' -> ')}`);
    return lines.join('\n');
  },
});

const check = defineCommand({
  noun: 'disk',
  verb: 'check',
  summary: 'check a VHD and its parents for every problem; --repair fixes footers',
  args: [{ name: 'path', description: 'VHD file', required: true }],
  options: { repair: { type: 'boolean', description: 'fix what can be fixed without guessing (footers)' } },
  async run(_ctx, input): Promise<CheckResult> {
    const path = argString(input, 'path');
    const format = await probeFormat(path);
    if (format !== 'vhd') {
      throw new FdError('FD_DISK_BAD_FORMAT', `${path} is ${format}, not VHD`, {
        hint: format === 'qcow2' ? 'use "qemu-img check"' : 'only VHD images have structure to check',
      });
    }
    return checkVhd(path, { repair: optBool(input, 'repair') });
  },
  render(r) {
    const lines = r.repaired.map((p) => `repaired ${p.code}: ${p.message}`);
    if (r.clean) lines.push(`${r.path}: no problems found`);
    for (const p of r.problems) {
      lines.push(
        `${p.code}: ${p.path === r.path ? '' : `${p.path}: `}${p.message}${p.repairable ? ' (--repair fixes this)' : ''}`,
      );
    }
    return lines.join('\n');
  },
  exitCode: (r) => (r.clean ? 0 : 1),
});

const convert = defineCommand({
  noun: 'disk',
  verb: 'convert',
  summary: 'convert between raw, dynamic VHD, fixed VHD and qcow2 (sparse, streaming)',
  args: [
    { name: 'src', description: 'source image (VHD chain, raw, qcow2, vmdk)', required: true },
    { name: 'dst', description: 'new target file', required: true },
  ],
  options: { to: { type: 'string', description: `target format: ${CONVERT_TARGETS.join(', ')}`, value: 'FORMAT' } },
  async run(ctx, input) {
    const to = optString(input, 'to');
    if (!to) throw badArgs(`--to is required (${CONVERT_TARGETS.join(', ')})`, 'convert');
    if (!CONVERT_TARGETS.includes(to as ConvertTarget)) {
      throw badArgs(`--to must be one of ${CONVERT_TARGETS.join(', ')}, not "${to}"`, 'convert');
    }
    return convertDisk(argString(input, 'src'), argString(input, 'dst'), {
      to: to as ConvertTarget,
      onProgress: ctx.progress('convert'),
      signal: ctx.signal,
    });
  },
});

const merge = defineCommand({
  noun: 'disk',
  verb: 'merge',
  summary: 'merge a differencing disk into its parent and remove it (resumable)',
  args: [{ name: 'child', description: 'differencing VHD', required: true }],
  run: (ctx, input) => mergeVhd(argString(input, 'child'), { onProgress: ctx.progress('merge') }),
});

const compact = defineCommand({
  noun: 'disk',
  verb: 'compact',
  summary: 'drop all-zero blocks of a dynamic VHD (rewrites it beside itself, then renames)',
  args: [{ name: 'path', description: 'dynamic or differencing VHD', required: true }],
  async run(ctx, input) {
    const path = argString(input, 'path');
    const i = await diskInfo(path);
    if (i.format !== 'vhd' || i.type === 'fixed') {
      throw new FdError(
        'FD_DISK_BAD_FORMAT',
        `${path} is a ${i.format} ${i.type} disk; only dynamic and differencing VHDs can be compacted`,
      );
    }
    return rebuildDynamic(path, { onProgress: ctx.progress('compact') });
  },
});

const resize = defineCommand({
  noun: 'disk',
  verb: 'resize',
  summary: 'grow a VHD to a new virtual size',
  args: [{ name: 'path', description: 'VHD file', required: true }],
  options: { size: { type: 'string', description: 'new virtual size (not smaller)', value: 'SIZE' } },
  async run(_ctx, input) {
    const size = optString(input, 'size');
    if (!size) throw badArgs('--size is required', 'resize');
    return resizeVhd(argString(input, 'path'), parseSize(size));
  },
});

export const diskCommands: CommandDef[] = [create, info, check, convert, merge, compact, resize] as CommandDef[];
