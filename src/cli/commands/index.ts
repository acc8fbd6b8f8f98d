/** Every command the CLI knows: local tools and the verbs generated from API operations. */
import type { CommandDef } from '../command.js';
import { publicContracts } from '../../api/contracts/index.js';
import { commandFromContract } from '../api-commands.js';
import { diskCommands } from './disk.js';
import { diskServeCommands } from './disk-serve.js';
import { ovfCommands } from './ovf.js';
import { labCommands } from './lab.js';
import { serveCommands } from './serve.js';
import { consoleCommands } from './console.js';
import { vncCommands } from './vnc.js';
import { imageImportCommands } from './image-import.js';
import { clusterJoinCommands } from './cluster-join.js';
import { ovfApplianceCommands } from './ovf-import.js';

export function allCommands(): CommandDef[] {
  // Commands written by hand replace the generated verb of the same name (uploads, consoles).
  const custom = [
    ...consoleCommands,
    ...vncCommands,
    ...imageImportCommands,
    ...clusterJoinCommands,
    ...ovfApplianceCommands(),
  ];
  const generated = publicContracts
    .map(commandFromContract)
    .filter((c): c is CommandDef => c !== undefined && !custom.some((x) => x.noun === c.noun && x.verb === c.verb));
  return [
    ...serveCommands,
    ...generated,
    ...custom,
    ...diskCommands,
    ...diskServeCommands,
    ...ovfCommands,
    ...labCommands,
  ] as CommandDef[];
}
