/** `flightdeck ovf ...`: inspect and validate OVF/OVA appliances, locally, no daemon needed. */
import { FdError } from '../../core/errors.js';
import { inspectPackage, renderInspect, type InspectResult } from '../../ovf/inspect.js';
import { validatePackage, type ValidationReport } from '../../ovf/validate.js';
import { argString, defineCommand, optString, type CommandDef, type ParsedInput } from '../command.js';

function props(input: ParsedInput): Record<string, string> {
  const raw = input.opts.prop;
  const list = Array.isArray(raw) ? raw : typeof raw === 'string' ? [raw] : [];
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0)
      throw new FdError('FD_BAD_ARGUMENT', `--prop ${kv} is not KEY=VALUE`, { hint: 'write --prop disksize=10' });
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

const inspect = defineCommand<InspectResult>({
  noun: 'ovf',
  verb: 'inspect',
  summary: 'show what an .ovf or .ova describes: systems, OS, CPUs, memory, disks, NICs, properties, EULA',
  args: [{ name: 'file', description: 'the .ovf descriptor or .ova archive', required: true }],
  options: {
    deployment: { type: 'string', description: 'deployment option to resolve hardware for', value: 'OPTION' },
    prop: {
      type: 'string',
      multiple: true,
      description: 'property value (resolves ${KEY} capacities)',
      value: 'KEY=VALUE',
    },
  },
  run: async (_ctx, input) => {
    const deployment = optString(input, 'deployment');
    return inspectPackage(argString(input, 'file'), {
      ...(deployment !== undefined ? { configuration: deployment } : {}),
      properties: props(input),
    });
  },
  render: renderInspect,
});

const validate = defineCommand<ValidationReport>({
  noun: 'ovf',
  verb: 'validate',
  summary: 'check an .ovf or .ova: DMTF schema, manifest digests, signature, sizes and every reference',
  args: [{ name: 'file', description: 'the .ovf descriptor or .ova archive', required: true }],
  run: async (_ctx, input) => validatePackage(argString(input, 'file')),
  render: (r) =>
    r.problems.length === 0
      ? `${r.file}: valid (OVF ${r.ovfVersion}, schema ${r.schema}${r.manifest ? `, manifest ${r.manifest} verified` : ', no manifest'}${r.signedBy ? `, signed by ${r.signedBy}` : ''}; ${r.checkedFiles} files)`
      : r.problems.join('\n'),
  exitCode: (r) => (r.problems.length > 0 ? 1 : 0),
});

export const ovfCommands: CommandDef[] = [inspect, validate] as CommandDef[];
