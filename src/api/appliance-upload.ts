/**
 * OVA upload for the web UI: `POST /api/v1/appliances/upload` with the .ova as an
 * application/octet-stream body. The bytes stream to a temp file under
 * DATA_DIR/appliances/uploads (fsynced, then renamed: a broken upload never looks whole), and the
 * answer is the package's inspection (virtual systems, properties, EULA texts), so the UI shows
 * the properties and the license before anything is created. Then
 * `POST /api/v1/appliances/uploads/{upload}/import` runs the `ovf.import` operation on that
 * file (which lets anyone who may write import an upload: the caller's own bytes; a path
 * import reads host files and needs an admin), and removes the upload once imported. Uploads older than a day are swept.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { FdError } from '../core/errors.js';
import { inspectPackage } from '../ovf/inspect.js';
import type { OvfEntity } from '../ovf/model.js';
import type { TokenRecord } from '../cluster/state/tokens.js';
import type { Permission } from '../core/contract.js';
import { ovfImport } from './contracts/ovf.js';
import { badInput } from './errors.js';
import type { TaskPlan } from './handler.js';
import { ovfHandlers } from './handlers/ovf.js';
import type { Services } from './services.js';
import { actorOf } from './audit-hook.js';

const DAY_MS = 86_400_000;
const UPLOAD_RE = /^[A-Za-z0-9_-]{12}$/;
const uploadsDir = (dataDir: string): string => join(dataDir, 'appliances', 'uploads');

export function registerApplianceUpload(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.post('/api/v1/appliances/upload', { bodyLimit: 2 ** 42 }, async (req) => {
    const caller = await requireAuth(req, 'write');
    if (req.headers['content-type'] !== 'application/octet-stream')
      throw new FdError('FD_BAD_CONTENT_TYPE', 'send the .ova as application/octet-stream', { status: 415 });
    const dir = uploadsDir(svc.dataDir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await sweep(dir);
    const id = randomBytes(9).toString('base64url');
    const tmp = join(dir, `.${id}.part`);
    const file = join(dir, `${id}.ova`);
    try {
      await pipeline(req.body as Readable, createWriteStream(tmp, { mode: 0o600 }));
      const fh = await open(tmp, 'r');
      await fh.sync().finally(() => fh.close());
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new FdError('FD_UPLOAD_FAILED', `the upload broke off: ${(err as Error).message}`, {
        hint: 'send it again',
        cause: err,
      });
    }
    try {
      const { model, ...inspected } = await inspectPackage(file);
      const eulas: string[] = [];
      const walk = (e: OvfEntity): void => {
        eulas.push(...e.eulas);
        if (e.kind === 'VirtualSystemCollection') e.members.forEach(walk);
      };
      walk(model.entity);
      svc.log.info('appliance uploaded', { file, caller: caller.name, bytes: (await stat(file)).size });
      return { ...inspected, upload: id, file, eulas };
    } catch (err) {
      await rm(file, { force: true });
      throw err;
    }
  });

  const importOp = ovfHandlers.find((b) => b.contract === ovfImport)!;
  app.post('/api/v1/appliances/uploads/:upload/import', async (req, reply) => {
    const caller = await requireAuth(req, 'write');
    const id = (req.params as { upload: string }).upload;
    if (!UPLOAD_RE.test(id))
      throw new FdError('FD_UPLOAD_NOT_FOUND', 'no such upload', { hint: 'upload the .ova again', status: 404 });
    const file = join(uploadsDir(svc.dataDir), `${id}.ova`);
    if (!(await stat(file).catch(() => undefined)))
      throw new FdError('FD_UPLOAD_NOT_FOUND', `upload ${id} is gone (uploads are kept a day)`, {
        hint: 'upload the .ova again',
        status: 404,
      });
    const body = (req.body ?? {}) as Record<string, unknown>;
    const parsed = ovfImport.input.safeParse({ ...body, file });
    if (!parsed.success) throw badInput(parsed.error.issues);
    const plan = (await importOp.run(
      { svc, caller: caller.name, role: caller.role },
      parsed.data,
    )) as TaskPlan<unknown>;
    const task = await svc.tasks.run(
      ovfImport.name,
      plan.title,
      plan.target,
      async (t) => {
        const out = await plan.work(t);
        await rm(file, { force: true });
        return out;
      },
      { by: actorOf(req, caller) },
    );
    req.audit = { operation: ovfImport.name, task: task.id, ...(plan.target ? { target: plan.target } : {}) };
    void reply.header('Location', `/api/v1/tasks/${task.id}`);
    return reply.status(202).send(task);
  });
}

async function sweep(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await stat(p).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > DAY_MS) await rm(p, { force: true });
  }
}
