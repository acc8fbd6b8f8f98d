import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, logContext } from './log.js';

const capture = (level?: 'debug' | 'info' | 'warn' | 'error') => {
  const lines: string[] = [];
  const log = createLogger({
    json: true,
    base: { svc: 'flightdeck' },
    write: (l) => lines.push(l),
    ...(level ? { level } : {}),
  });
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
};

test('JSON lines: level, message, ISO time, base and child fields; below the level nothing', () => {
  const { log, parsed } = capture('info');
  log.debug('not shown');
  log.info('vm started', { vm: 'web' });
  log.child({ host: 'h1' }).warn('slow');
  const [a, b] = parsed();
  assert.equal(parsed().length, 2);
  assert.equal(a!.level, 'info');
  assert.equal(a!.msg, 'vm started');
  assert.equal(a!.vm, 'web');
  assert.equal(a!.svc, 'flightdeck');
  assert.ok(!Number.isNaN(Date.parse(String(a!.time))), 'an ISO timestamp');
  assert.deepEqual([b!.level, b!.msg, b!.host], ['warn', 'slow', 'h1']);
});

test('credentials never reach the log: authorization headers, tokens, passwords', () => {
  const { log, lines } = capture();
  log.info('request', {
    headers: { authorization: 'Bearer s3cret-one', host: 'x' },
    token: 's3cret-two',
    join: { token: 's3cret-three', password: 's3cret-four' },
  });
  assert.doesNotMatch(lines.join('\n'), /s3cret/);
  const j = JSON.parse(lines[0]!) as { headers: { authorization: string; host: string }; token: string };
  assert.equal(j.headers.authorization, '[redacted]');
  assert.equal(j.headers.host, 'x', 'the rest stays');
  assert.equal(j.token, '[redacted]');
});

test('every line logged within a request carries its id, also from what it started', async () => {
  const { log, parsed } = capture();
  await logContext.run({ reqId: 'r-42' }, async () => {
    log.info('handling');
    await new Promise((r) => setTimeout(r, 1));
    log.child({ task: 't1' }).info('task step');
  });
  log.info('outside');
  assert.deepEqual(
    parsed().map((l) => l.reqId),
    ['r-42', 'r-42', undefined],
  );
});
