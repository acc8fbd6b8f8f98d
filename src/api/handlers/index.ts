/** Every handler, public and internal: the server makes a route of each. */
import type { Binding } from '../handler.js';
import { auditHandlers } from './audit.js';
import { catalogHandlers } from './catalog.js';
import { clusterHandlers } from './cluster.js';
import { consoleHandlers } from './consoles.js';
import { internalHandlers } from './internal.js';
import { migrationHandlers } from './migration.js';
import { ovfHandlers } from './ovf.js';
import { protectionHandlers } from './protection.js';
import { taskHandlers } from './tasks.js';
import { tokenHandlers } from './tokens.js';
import { vmHandlers } from './vms.js';

export const bindings: Binding[] = [
  ...vmHandlers,
  ...consoleHandlers,
  ...protectionHandlers,
  ...catalogHandlers,
  ...ovfHandlers,
  ...clusterHandlers,
  ...migrationHandlers,
  ...taskHandlers,
  ...tokenHandlers,
  ...auditHandlers,
  ...internalHandlers,
];
