/** Handler of the audit log (contracts/audit.ts). */
import { FdError, isFdError } from '../../core/errors.js';
import { parseDurationMs } from '../../core/units.js';
import type { AuditEntry } from '../../cluster/state/audit.js';
import { auditList } from '../contracts/audit.js';
import { handle, type Binding } from '../handler.js';

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
  throw new FdError('FD_BAD_SINCE', `--since "${text}" is neither a duration nor a time`, {
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

export const auditHandlers: Binding[] = [
  handle(auditList, async ({ svc }, { vm, token, since, limit }) => {
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
  }),
];
