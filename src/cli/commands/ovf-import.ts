/**
 * `ovf import FILE` and `ovf export VM... --out FILE.ova`: the verbs generated from the
 * contracts (src/api/contracts/ovf.ts), with two things the generator cannot do: relative
 * paths are made absolute here (the daemon reads and writes on its own host, from its own
 * working directory), and export takes any number of VMs.
 */
import { resolve } from 'node:path';
import { publicContracts } from '../../api/contracts/index.js';
import { commandFromContract } from '../api-commands.js';
import type { CommandDef, ParsedInput } from '../command.js';

function generated(name: string): CommandDef {
  const op = publicContracts.find((o) => o.name === name);
  const cmd = op && commandFromContract(op);
  if (!cmd) throw new Error(`operation ${name} has no CLI verb`);
  return cmd;
}

function withAbsolute(cmd: CommandDef, args: string[], opts: string[], variadic?: string): CommandDef {
  return {
    ...cmd,
    args: (cmd.args ?? []).map((a) => (a.name === variadic ? { ...a, variadic: true } : a)),
    run(ctx, input) {
      const fixed: ParsedInput & { rest: string[] } = { ...input, args: { ...input.args }, opts: { ...input.opts } };
      for (const a of args) {
        const v = fixed.args[a];
        if (typeof v === 'string') fixed.args[a] = resolve(v);
      }
      for (const o of opts) {
        const v = fixed.opts[o];
        if (typeof v === 'string') fixed.opts[o] = resolve(v);
      }
      return cmd.run(ctx, fixed);
    },
  };
}

export function ovfApplianceCommands(): CommandDef[] {
  return [
    withAbsolute(generated('ovf.import'), ['file'], []),
    withAbsolute(generated('ovf.export'), [], ['out'], 'vms'),
  ];
}
