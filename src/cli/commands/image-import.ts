/**
 * `flightdeck image import FILE --name N`: a local daemon reads the file where it is when it lies
 * in one of the host's import directories and the token is an admin's; otherwise (and for a
 * remote daemon, or with --upload) the file is streamed as an upload, with a progress bar.
 * Either way the daemon runs the same import task (ISO kept, disk images converted to VHD).
 */
import { resolve } from 'node:path';
import { access } from 'node:fs/promises';
import { FdError } from '../../core/errors.js';
import { Progress } from '../../core/progress.js';
import type { TaskRecord } from '../../cluster/state/tasks.js';
import { argString, defineCommand, optBool, optString, type CommandDef } from '../command.js';
import { ApiClient, throwIfError } from '../api-client.js';
import { followTask } from '../api-commands.js';
import { renderDefault } from '../render.js';

const isLoopback = (url: string): boolean => /^https?:\/\/(127\.|localhost|\[::1\])/.test(url);

export const imageImportCommands: CommandDef[] = [
  defineCommand({
    noun: 'image',
    verb: 'import',
    summary: 'import an ISO or a disk image (qcow2, raw, VMDK, VHD: converted to VHD)',
    args: [{ name: 'file', description: 'the ISO or disk image file', required: true }],
    options: {
      name: { type: 'string', description: 'image name (required)', value: 'NAME' },
      upload: { type: 'boolean', description: 'stream the file to the daemon even when it runs here' },
      'no-wait': { type: 'boolean', description: 'print the task and return without waiting' },
    },
    async run(ctx, input) {
      const file = resolve(argString(input, 'file'));
      const name = optString(input, 'name');
      if (!name)
        throw new FdError('FD_CLI_BAD_ARGS', 'missing --name', { hint: 'flightdeck image import FILE --name NAME' });
      try {
        await access(file);
      } catch (err) {
        throw new FdError('FD_IMAGE_FILE_NOT_FOUND', `cannot read ${file}`, { cause: err });
      }
      const api = await ApiClient.resolve(ctx.global);
      let task: TaskRecord | undefined;
      if (!optBool(input, 'upload') && isLoopback(api.url)) {
        const res = await api.call<TaskRecord>('POST', '/api/v1/images', { file, name });
        // The daemon reads by path only from its import directories and for an admin token;
        // anything else travels as an upload, read here with the user's own rights.
        const code = (res.body as { error?: { code?: string } } | null)?.error?.code;
        if (code !== 'FD_PATH_NOT_ALLOWED' && code !== 'FD_FORBIDDEN') task = throwIfError(res).body;
      }
      if (!task) {
        const bar = ctx.progress(`upload ${name}`);
        let progress: Progress | undefined;
        const res = await api.upload<TaskRecord>(
          `/api/v1/images/${encodeURIComponent(name)}/upload`,
          file,
          (sent, total) => {
            progress ??= new Progress(total, bar);
            progress.report(sent);
          },
        );
        task = throwIfError(res).body;
      }
      if (optBool(input, 'no-wait')) return task;
      return followTask(api, ctx, task);
    },
    render: (t: unknown) => {
      const task = t as TaskRecord;
      if (task.state === 'running') return `task ${task.id} started: ${task.title}`;
      if (task.state !== 'succeeded')
        return `task ${task.id} ${task.state}: ${task.error?.message ?? ''}\n  code: ${task.error?.code ?? ''}`;
      return renderDefault(task.result);
    },
    exitCode: (t: unknown) => ((t as TaskRecord).state === 'failed' || (t as TaskRecord).state === 'cancelled' ? 1 : 0),
  }),
];
