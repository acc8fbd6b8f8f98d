/**
 * /api/docs: Swagger UI (the swagger-ui-dist package) rendering /api/v1/openapi.json, with
 * "Authorize" for a bearer token and "Try it out" on every operation. Served from the package
 * on this host, never from a CDN (these machines may reach no web); only the few files the
 * page needs, by name.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';

const UI_DIR = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
};

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>flightdeck API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
<link rel="icon" href="/api/docs/assets/favicon-32x32.png">
</head><body><div id="docs"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body></html>`;

// In a file of its own, so a Content-Security-Policy without inline scripts allows the page.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/api/v1/openapi.json',
  dom_id: '#docs',
  deepLinking: true,
  persistAuthorization: true,
  tryItOutEnabled: false,
  validatorUrl: null,
});
`;

export function registerDocs(app: FastifyInstance): void {
  const cache = new Map<string, Buffer>();
  const headers = {
    'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
  };
  app.get('/api/docs', async (_req, reply) => reply.headers(headers).type('text/html; charset=utf-8').send(PAGE));
  app.get('/api/docs/init.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').send(INIT));
  app.get<{ Params: { file: string } }>('/api/docs/assets/:file', async (req, reply) => {
    const type = ASSETS[req.params.file];
    if (!type) return reply.status(404).send({ error: { code: 'FD_ROUTE_NOT_FOUND', message: 'no such docs file' } });
    let data = cache.get(req.params.file);
    if (!data) cache.set(req.params.file, (data = await readFile(join(UI_DIR, req.params.file))));
    return reply.type(type).header('cache-control', 'public, max-age=86400').send(data);
  });
}
