/** `flightdeck ovf ...`: inspect and validate OVF/OVA appliances. */
import type { CommandDef } from '../command.js';

export const ovfCommands: CommandDef[] = [];
