/** `flightdeck disk ...`: local VHD tools that work on files, no daemon needed. */
import type { CommandDef } from '../command.js';

export const diskCommands: CommandDef[] = [];
