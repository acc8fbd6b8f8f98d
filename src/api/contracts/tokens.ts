/** Contracts of API tokens: list, create, revoke. */
import { z } from 'zod';
import { operation } from '../../core/contract.js';
import { Name } from '../../cluster/state/model.js';

const TokenOut = z.object({ id: z.string(), name: z.string(), role: z.string(), createdAt: z.string() });

export const tokenList = operation({
  name: 'token.list',
  summary: 'list API tokens (never their secrets)',
  http: { method: 'GET', path: '/tokens' },
  input: z.strictObject({}),
  output: z.array(TokenOut),
  permission: 'admin',
  cli: { noun: 'token', verb: 'list', columns: ['id', 'name', 'role', 'createdAt'] },
});

export const tokenCreate = operation({
  name: 'token.create',
  summary: 'create an API token; its secret is shown once',
  http: { method: 'POST', path: '/tokens' },
  input: z.strictObject({
    name: Name.describe('a name to recognise the token by'),
    role: z.enum(['admin', 'operator', 'viewer']).default('operator').describe('what the token may do'),
  }),
  output: z.object({ token: z.string(), info: TokenOut }),
  permission: 'admin',
  status: 201,
  cli: { noun: 'token', verb: 'create', args: ['name'] },
});

export const tokenRevoke = operation({
  name: 'token.revoke',
  summary: 'revoke an API token: it stops working at once',
  http: { method: 'DELETE', path: '/tokens/:id' },
  input: z.strictObject({ id: z.string().max(64).describe('token id or name') }),
  output: TokenOut,
  permission: 'admin',
  errors: ['FD_TOKEN_NOT_FOUND'],
  cli: { noun: 'token', verb: 'revoke', args: ['id'] },
});

export const tokenContracts = [tokenList, tokenCreate, tokenRevoke];
