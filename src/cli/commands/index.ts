/** Every command the CLI knows: local tools and the verbs generated from API operations. */
import type { CommandDef } from '../command.js';
import { operations } from '../../api/operations/index.js';
import { commandFromOperation } from '../api-commands.js';
import { diskCommands } from './disk.js';
import { diskServeCommands } from './disk-serve.js';
import { ovfCommands } from './ovf.js';
import { serveCommands } from './serve.js';
import { consoleCommands } from './console.js';

export function allCommands(): CommandDef[] {
  const generated = operations.map(commandFromOperation).filter((c): c is CommandDef => c !== undefined);
  return [
    ...serveCommands,
    ...generated,
    ...consoleCommands,
    ...diskCommands,
    ...diskServeCommands,
    ...ovfCommands,
  ] as CommandDef[];
}
