/** Contracts of tasks: list, show, wait, cancel. */
import { z } from 'zod';
import { operation } from '../../core/contract.js';
import { TaskOut } from './common.js';

const TaskId = z.string().max(64).describe('task id');

export const taskList = operation({
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
});

export const taskShow = operation({
  name: 'task.show',
  summary: 'show a task with its progress, log and result',
  http: { method: 'GET', path: '/tasks/:id' },
  input: z.strictObject({ id: TaskId }),
  output: TaskOut,
  permission: 'read',
  errors: ['FD_TASK_NOT_FOUND'],
  cli: { noun: 'task', verb: 'show', args: ['id'] },
});

export const taskWait = operation({
  name: 'task.wait',
  summary: 'wait until a task has finished and show it',
  http: { method: 'GET', path: '/tasks/:id/wait' },
  input: z.strictObject({
    id: TaskId,
    timeoutS: z.coerce.number().int().min(1).max(86400).default(3600).describe('give up after this many seconds'),
  }),
  output: TaskOut,
  permission: 'read',
  errors: ['FD_TASK_NOT_FOUND'],
  cli: { noun: 'task', verb: 'wait', args: ['id'] },
});

export const taskCancel = operation({
  name: 'task.cancel',
  summary: 'ask a running task to stop',
  http: { method: 'POST', path: '/tasks/:id/actions/cancel' },
  input: z.strictObject({ id: TaskId }),
  output: TaskOut,
  permission: 'write',
  errors: ['FD_TASK_NOT_FOUND', 'FD_TASK_FINISHED'],
  cli: { noun: 'task', verb: 'cancel', args: ['id'] },
});

export const taskContracts = [taskList, taskShow, taskWait, taskCancel];
