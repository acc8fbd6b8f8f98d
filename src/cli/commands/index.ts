/** Every command the CLI knows: local tools and the verbs generated from API operations. */
import type { CommandDef } from '../command.js';
import { diskCommands } from './disk.js';
import { diskServeCommands } from './disk-serve.js';
import { ovfCommands } from './ovf.js';

export function allCommands(): CommandDef[] {
  return [...diskCommands, ...diskServeCommands, ...ovfCommands] as CommandDef[];
}
