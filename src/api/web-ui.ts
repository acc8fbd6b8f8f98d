/**
 * The web UI's built files (web/, built by Vite into dist/web) served at `/` by the daemon
 * itself: no second server. Any GET for a page that is not an API path answers index.html, so
 * the single-page app's own URLs (/vms/web1, /tasks) survive a reload. The pages carry a strict
 * Content-Security-Policy: scripts only from here, connections only back to this daemon.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/** dist/src/api/web-ui.js -> dist/web */
export const WEB_ROOT = resolve(fileURLToPath(import.meta.url), '../../../web');

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  // noVNC and xterm.js set element styles; React's style props do too.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "font-src 'self' data:",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

const API_PREFIXES = ['/api/', '/metrics'];

/** Returns the not-found fallback: index.html for a GET of an app page, false for anything else. */
export async function registerWebUi(
  app: FastifyInstance,
  root = WEB_ROOT,
): Promise<(req: FastifyRequest, reply: FastifyReply) => boolean> {
  const built = existsSync(join(root, 'index.html'));
  if (built) {
    await app.register(fastifyStatic, {
      root,
      prefix: '/',
      wildcard: false,
      index: false,
      setHeaders: (res, path) => {
        // Vite names assets by content hash: they never change under one name.
        if (path.includes('/assets/')) void res.header('cache-control', 'public, max-age=31536000, immutable');
      },
    });
  }
  const index = built ? await readFile(join(root, 'index.html')) : undefined;
  app.get('/', (_req, reply) => sendIndex(reply, index));
  return (req, reply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const path = req.url.split('?')[0]!;
    if (API_PREFIXES.some((p) => path.startsWith(p)) || /\.[a-z0-9]+$/i.test(path)) return false;
    void sendIndex(reply, index);
    return true;
  };
}

function sendIndex(reply: FastifyReply, index: Buffer | undefined): FastifyReply {
  void reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff');
  void reply.header('referrer-policy', 'no-referrer').header('cache-control', 'no-cache');
  if (!index)
    return reply
      .type('text/html')
      .send('<!doctype html><title>flightdeck</title><p>The web UI is not built: run <code>npm run build</code>.');
  return reply.type('text/html').send(index);
}
