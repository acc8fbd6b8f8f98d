/** Handlers of API tokens (contracts/tokens.ts). */
import { tokenCreate, tokenList, tokenRevoke } from '../contracts/tokens.js';
import { handle, type Binding } from '../handler.js';

export const tokenHandlers: Binding[] = [
  handle(tokenList, ({ svc }) => svc.tokens.list()),
  handle(tokenCreate, ({ svc }, { name, role }) => svc.tokens.create(name, role)),
  handle(tokenRevoke, ({ svc }, { id }) => svc.tokens.revoke(id)),
];
