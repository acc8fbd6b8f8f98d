/** Operations on tasks: list, show, wait, cancel. */
import { z } from 'zod';
import { defineOperation } from '../operation.js';

const TaskOut = z.looseObject({ id: z.string(), state: z.string(), title: z.string() });

export const taskOperations = [
  defineOperation({
    name: 'task.list',
    summary: 'list recent tasks, newest first',
    http: { method: 'GET', path: '/tasks' },
    input: z.strictObject({
      state: z.enum(['running', 'succeeded', 'failed', 'cancelled']).optional().describe('only tasks in this state'),
      limit: z.coerce.number().int().min(1).max(1000).default(50).describe('at most this many'),
    }),
    output: z.array(TaskOut),
    permission: 'read',
    cli: { noun: 'task', verb: 'list', columns: ['id', 'operation', 'state', 'title', 'createdAt'] },
    run: async ({ svc }, { state, limit }) =>
      (await svc.tasks.list()).filter((t) => !state || t.state === state).slice(0, limit),
  }),
  defineOperation({
    name: 'task.show',
    summary: 'show a task with its progress, log and result',
    http: { method: 'GET', path: '/tasks/:id' },
    input: z.strictObject({ id: z.string().max(64).describe('task id') }),
    output: TaskOut,
    permission: 'read',
    cli: { noun: 'task', verb: 'show', args: ['id'] },
    run: ({ svc }, { id }) => svc.tasks.get(id),
  }),
  defineOperation({
    name: 'task.wait',
    summary: 'wait until a task has finished and show it',
    http: { method: 'GET', path: '/tasks/:id/wait' },
    input: z.strictObject({
      id: z.string().max(64).describe('task id'),
      timeoutS: z.coerce.number().int().min(1).max(86400).default(3600).describe('give up after this many seconds'),
    }),
    output: TaskOut,
    permission: 'read',
    cli: { noun: 'task', verb: 'wait', args: ['id'] },
    run: async ({ svc }, { id, timeoutS }) => {
      await svc.tasks.get(id);
      return svc.tasks.wait(id, timeoutS * 1000);
    },
  }),
  defineOperation({
    name: 'task.cancel',
    summary: 'ask a running task to stop',
    http: { method: 'POST', path: '/tasks/:id/actions/cancel' },
    input: z.strictObject({ id: z.string().max(64).describe('task id') }),
    output: TaskOut,
    permission: 'write',
    cli: { noun: 'task', verb: 'cancel', args: ['id'] },
    run: ({ svc }, { id }) => svc.tasks.cancel(id),
  }),
];
