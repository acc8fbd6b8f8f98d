/** Every command the CLI knows: local tools and the verbs generated from API operations. */
import type { CommandDef } from '../command.js';
import { diskCommands } from './disk.js';

export function allCommands(): CommandDef[] {
  return [...(diskCommands as CommandDef[])];
}
