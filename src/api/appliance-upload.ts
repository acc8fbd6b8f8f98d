/**
 * OVA upload for the web UI: `POST /api/v1/appliances/upload` with the .ova as an
 * application/octet-stream body. The bytes stream to a temp file under
 * DATA_DIR/appliances/uploads (fsynced, then renamed: a broken upload never looks whole), and
 * the answer is the package's inspection (virtual systems, properties, EULA texts), so the UI
 * shows the properties and the license before anything is created; the import itself is the
 * ordinary `ovf.import` operation on the returned path. Uploads older than a day are swept.
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
import type { Services } from './services.js';

const DAY_MS = 86_400_000;

export function registerApplianceUpload(
  app: FastifyInstance,
  svc: Services,
  requireAuth: (req: FastifyRequest, perm: Permission) => Promise<TokenRecord>,
): void {
  app.post('/api/v1/appliances/upload', { bodyLimit: 2 ** 42 }, async (req) => {
    const caller = await requireAuth(req, 'write');
    if (req.headers['content-type'] !== 'application/octet-stream')
      throw new FdError('FD_BAD_CONTENT_TYPE', 'send the .ova as application/octet-stream', { status: 415 });
    const dir = join(svc.dataDir, 'appliances', 'uploads');
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
}

async function sweep(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const p = join(dir, name);
    const st = await stat(p).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > DAY_MS) await rm(p, { force: true });
  }
}
