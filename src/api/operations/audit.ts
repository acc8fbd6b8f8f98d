/** The audit log through the API: `GET /api/v1/audit`, `flightdeck audit list`. */
import { z } from 'zod';
import { FdError, isFdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import type { AuditEntry } from '../../cluster/state/audit.js';
import { defineOperation } from '../operation.js';
import { Loose } from './common.js';

/** "1h", "30m", "7d" back from now, or an ISO time. */
function sinceMs(text: string): number {
  if (/^\d{4}-\d\d-\d\d/.test(text)) {
    const t = Date.parse(text);
    if (Number.isFinite(t)) return t;
  } else {
    const days = /^(\d+)d$/.exec(text);
    if (days) return Date.now() - Number(days[1]) * 86_400_000;
    try {
      return Date.now() - parseDurationMs(text);
    } catch (err) {
      if (!isFdError(err, 'FD_BAD_DURATION')) throw err;
    }
  }
  throw new FdError('FD_BAD_REQUEST', `--since "${text}" is neither a duration nor a time`, {
    hint: 'write 1h, 30m, 7d or 2026-01-31T12:00:00Z',
  });
}

/** One line each for a table: what it was about, how it ended. */
function withText(e: AuditEntry): AuditEntry & { token: string; targetText: string; resultText: string } {
  const t = e.target;
  const targetText = t ? [t.kind, t.name ?? t.ref ?? t.id].filter(Boolean).join(' ') : '-';
  const r = e.result;
  const resultText = [r.status, r.code, r.task ? `task ${r.task}` : undefined].filter(Boolean).join(' ');
  return { ...e, token: e.tokenName ?? e.tokenId ?? '-', targetText, resultText };
}

export const auditOperations = [
  defineOperation({
    name: 'audit.list',
    summary: 'who changed what: the audit log of API calls and consoles, newest first',
    http: { method: 'GET', path: '/audit' },
    input: z.strictObject({
      vm: z.string().min(1).max(64).optional().describe('only records about this VM (name or id)'),
      token: z.string().min(1).max(64).optional().describe('only calls made with this token (name or id)'),
      since: z.string().min(1).max(40).optional().describe('only records since then: 1h, 30m, 7d or an ISO time'),
      limit: z.coerce.number().int().min(1).max(10_000).default(100).describe('at most this many records'),
    }),
    output: z.array(Loose),
    permission: 'admin',
    cli: {
      noun: 'audit',
      verb: 'list',
      columns: ['at', 'token', 'role', 'source', 'operation', 'targetText', 'resultText'],
      flags: { since: { value: 'DURATION|TIME' }, vm: { value: 'NAME' }, token: { value: 'NAME' } },
    },
    run: async ({ svc }, { vm, token, since, limit }) => {
      let vmRef: { id?: string; name: string } | undefined;
      if (vm) {
        try {
          const found = (await svc.vms.find(vm)).value;
          vmRef = { id: found.id, name: found.name };
        } catch (err) {
          if (!isFdError(err, 'FD_VM_NOT_FOUND')) throw err;
          vmRef = { name: vm }; // a deleted VM is still found in the log by its name
        }
      }
      const entries = await svc.audit.list({
        ...(vmRef ? { vm: vmRef } : {}),
        ...(token ? { token } : {}),
        ...(since ? { sinceMs: sinceMs(since) } : {}),
        limit,
      });
      return entries.map(withText);
    },
  }),
];
