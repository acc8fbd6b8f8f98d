/** Handlers of the host-to-host steps (cluster/peer/contracts.ts), run on the host called. */
import {
  migrationAbort,
  migrationFinish,
  migrationPrepare,
  migrationState,
  protectionHandover,
  protectionHandoverFinish,
  protectionPrepare,
  protectionRelease,
  protectionTakeover,
} from '../../cluster/peer/contracts.js';
import { handle, type Binding } from '../handler.js';

export const internalHandlers: Binding[] = [
  handle(migrationPrepare, ({ svc }, input) => svc.agent.migration.target.prepare(input)),
  handle(migrationFinish, ({ svc }, { id }) => svc.agent.migration.target.finish(id)),
  handle(migrationState, ({ svc }, { id }) => svc.agent.migration.target.state(id)),
  handle(migrationAbort, ({ svc }, { id }) => svc.agent.migration.target.abort(id)),
  handle(protectionPrepare, ({ svc }, input) => svc.agent.protection.standby.prepare(input)),
  handle(protectionRelease, ({ svc }, { id }) => svc.agent.protection.standby.release(id)),
  handle(protectionTakeover, ({ svc }, input) => svc.agent.protection.takeover(input)),
  handle(protectionHandover, ({ svc }, input) => svc.agent.protection.handover(input)),
  handle(protectionHandoverFinish, ({ svc }, { id }) => svc.agent.protection.handoverFinish(id)),
];
