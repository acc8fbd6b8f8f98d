/** `flightdeck disk serve|mount|unmount`: the vdisk data path from the command line. */
import type { CommandDef } from '../command.js';

export const diskServeCommands: CommandDef[] = [];
