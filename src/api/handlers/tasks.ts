/** Handlers of tasks (contracts/tasks.ts). */
import { taskCancel, taskList, taskShow, taskWait } from '../contracts/tasks.js';
import { handle, type Binding } from '../handler.js';

export const taskHandlers: Binding[] = [
  handle(taskList, async ({ svc }, { state, limit }) =>
    (await svc.tasks.list()).filter((t) => !state || t.state === state).slice(0, limit),
  ),
  handle(taskShow, ({ svc }, { id }) => svc.tasks.get(id)),
  handle(taskWait, async ({ svc }, { id, timeoutS }) => {
    await svc.tasks.get(id);
    return svc.tasks.wait(id, timeoutS * 1000);
  }),
  handle(taskCancel, ({ svc }, { id }) => svc.tasks.cancel(id)),
];
