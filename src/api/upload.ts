/**
 * Image upload: `POST /api/v1/images/{name}/upload` with the file as an
 * application/octet-stream body. The bytes stream to a temp file beside the images (never
 * held in memory), then the same import task as a path import runs on it (ISO kept, disks
 * converted to VHD) and removes the temp file. Answers like every task call: 202 + Location,
 * or the finished task with ?wait=true.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import { NAME_RE } from '../core/ids.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import type { Services } from './services.js';
import { actorOf } from './audit-hook.js';

export function registerUpload(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
  app.post('/api/v1/images/:name/upload', { bodyLimit: 2 ** 42 }, async (req, reply) => {
    req.audit = { operation: 'image.upload' };
    const caller = await requireAuth(req, 'write');
    const name = (req.params as { name: string }).name;
    if (!NAME_RE.test(name)) {
      throw new FdError('FD_BAD_NAME', `image name "${name.slice(0, 80)}" is not allowed`, {
        hint: 'use letters, digits, ".", "_" or "-"',
      });
    }
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new FdError('FD_BAD_CONTENT_TYPE', 'send the file as application/octet-stream', { status: 415 });
    }
    if (svc.catalog.findImage(name))
      throw new FdError('FD_IMAGE_EXISTS', `an image named ${name} exists`, {
        hint: 'choose another name',
        status: 409,
      });
    const dir = join(svc.dataDir, 'images', '.uploads');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${name}.${process.pid}.${Date.now()}.upload`);
    try {
      await pipeline(req.body as Readable, createWriteStream(tmp, { mode: 0o600 }));
    } catch (err) {
      await rm(tmp, { force: true });
      throw new FdError('FD_UPLOAD_FAILED', `the upload of ${name} broke off: ${(err as Error).message}`, {
        hint: 'send it again',
        cause: err,
      });
    }
    const task = await svc.tasks.run(
      'image.upload',
      `import uploaded image ${name}`,
      { kind: 'image', id: name, name },
      async (t) => {
        try {
          return await svc.provisioner.images.import(name, tmp, t, { upload: true });
        } finally {
          await rm(tmp, { force: true });
        }
      },
      { by: actorOf(req, caller) },
    );
    req.audit.task = task.id;
    void reply.header('Location', `/api/v1/tasks/${task.id}`);
    const wait = (req.query as Record<string, unknown>)['wait'];
    if (wait === 'true' || wait === '1') return reply.status(200).send(await svc.tasks.wait(task.id));
    return reply.status(202).send(task);
  });
}
