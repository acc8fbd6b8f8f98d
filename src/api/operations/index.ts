/** Every API operation, in the order the docs and `flightdeck --help` list them. */
import type { Operation } from '../operation.js';
import { auditOperations } from './audit.js';
import { catalogOperations, networkOperations } from './catalog.js';
import { clusterOperations } from './cluster.js';
import { consoleOperations } from './consoles.js';
import { migrationOperations } from './migration.js';
import { ovfOperations } from './ovf.js';
import { protectionOperations } from './protection.js';
import { taskOperations } from './tasks.js';
import { tokenOperations } from './tokens.js';
import { vmOperations } from './vms.js';

export const operations: Operation[] = [
  ...vmOperations,
  ...consoleOperations,
  ...protectionOperations,
  ...catalogOperations,
  ...networkOperations,
  ...ovfOperations,
  ...clusterOperations,
  ...migrationOperations,
  ...taskOperations,
  ...tokenOperations,
  ...auditOperations,
];
