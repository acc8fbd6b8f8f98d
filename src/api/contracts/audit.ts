/** The contract of the audit log: `GET /api/v1/audit`, `flightdeck audit list`. */
import { z } from 'zod';
import { operation } from '../../core/contract.js';
import { Loose } from './common.js';

export const auditList = operation({
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
  errors: ['FD_BAD_SINCE'],
  cli: {
    noun: 'audit',
    verb: 'list',
    columns: ['at', 'token', 'role', 'source', 'operation', 'targetText', 'resultText'],
    flags: { since: { value: 'DURATION|TIME' }, vm: { value: 'NAME' }, token: { value: 'NAME' } },
  },
});

export const auditContracts = [auditList];
