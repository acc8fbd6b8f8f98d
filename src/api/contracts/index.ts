/**
 * Every public API contract, in the order the docs and `flightdeck --help` list them. This
 * module and those it imports hold no server code: the CLI loads it to build its verbs.
 */
import type { Contract } from '../../core/contract.js';
import { auditContracts } from './audit.js';
import { catalogContracts } from './catalog.js';
import { clusterContracts } from './cluster.js';
import { consoleContracts } from './consoles.js';
import { migrationContracts } from './migration.js';
import { ovfContracts } from './ovf.js';
import { protectionContracts } from './protection.js';
import { taskContracts } from './tasks.js';
import { tokenContracts } from './tokens.js';
import { vmContracts } from './vms.js';

export const publicContracts: Contract[] = [
  ...vmContracts,
  ...consoleContracts,
  ...protectionContracts,
  ...catalogContracts,
  ...ovfContracts,
  ...clusterContracts,
  ...migrationContracts,
  ...taskContracts,
  ...tokenContracts,
  ...auditContracts,
];
