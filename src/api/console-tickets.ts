/**
 * Console tickets: a browser cannot put a header on a WebSocket, and a long-lived API token
 * must never travel in a URL. So a caller with a token asks for a ticket
 * (`POST /api/v1/vms/{id}/console-ticket`) and opens the serial or VNC WebSocket with
 * `?ticket=`. A ticket names one VM, lives 30 s and works once. Tickets are kept in the store
 * (only a SHA-256 of the secret, like tokens), so any host of the cluster can redeem one, and
 * using one is a compare-and-swap: two connections racing with one ticket cannot both win.
 */
import { createHash, randomBytes } from 'node:crypto';
import { FdError } from '../core/errors.js';
import type { KvStore } from '../cluster/state/kv.js';
import { keys } from '../cluster/state/keys.js';

export const TICKET_TTL_MS = 30_000;
const PREFIX = keys.consoleTickets;
const TICKET_RE = /^fdt_[A-Za-z0-9_-]{32}$/;

interface TicketRecord {
  vmId: string;
  /** Name of the token the ticket was issued to (the console's log line names it). */
  caller: string;
  expiresAt: number;
  usedAt: number | null;
}

const hashOf = (ticket: string): string => createHash('sha256').update(ticket).digest('hex');

export class ConsoleTickets {
  constructor(
    private readonly store: KvStore,
    private readonly now: () => number = Date.now,
  ) {}

  async issue(vmId: string, caller: string): Promise<{ ticket: string; expiresAt: string; vmId: string }> {
    await this.sweep();
    const ticket = `fdt_${randomBytes(24).toString('base64url')}`;
    const rec: TicketRecord = {
      vmId,
      caller,
      expiresAt: this.now() + TICKET_TTL_MS,
      usedAt: null,
    };
    await this.store.create(PREFIX + hashOf(ticket), rec);
    return { ticket, expiresAt: new Date(rec.expiresAt).toISOString(), vmId };
  }

  /** Uses the ticket for `vmId`: the caller it was issued to, or a refusal with a stable code. */
  async redeem(ticket: string, vmId: string): Promise<{ caller: string }> {
    if (!TICKET_RE.test(ticket)) throw invalid();
    const key = PREFIX + hashOf(ticket);
    const cur = await this.store.get<TicketRecord>(key);
    if (!cur) throw invalid();
    const t = cur.value;
    if (t.usedAt !== null) {
      throw new FdError('FD_TICKET_USED', 'this console ticket was used already', {
        hint: 'ask for a new one: POST /api/v1/vms/{id}/console-ticket',
        status: 401,
      });
    }
    if (this.now() > t.expiresAt) {
      throw new FdError('FD_TICKET_EXPIRED', `this console ticket expired (they live ${TICKET_TTL_MS / 1000} s)`, {
        hint: 'ask for a new one just before connecting',
        status: 401,
      });
    }
    if (t.vmId !== vmId) {
      throw new FdError('FD_TICKET_WRONG_VM', 'this console ticket is for another VM', {
        hint: 'ask for a ticket for this VM',
        status: 403,
      });
    }
    // Whoever swaps first has the ticket; a racing second use fails the revision check.
    if (!(await this.store.update(key, { ...t, usedAt: this.now() }, cur.rev))) {
      throw new FdError('FD_TICKET_USED', 'this console ticket was used already', {
        hint: 'ask for a new one: POST /api/v1/vms/{id}/console-ticket',
        status: 401,
      });
    }
    return { caller: t.caller };
  }

  /** Drops tickets past their life (kept a minute longer, so a late reuse still reads "used"). */
  private async sweep(): Promise<void> {
    const cutoff = this.now() - 60_000;
    for (const t of await this.store.list<TicketRecord>(PREFIX)) {
      if (t.value.expiresAt < cutoff) await this.store.remove(t.key, t.rev);
    }
  }
}

function invalid(): FdError {
  return new FdError('FD_TICKET_INVALID', 'this console ticket is not valid', {
    hint: 'ask for a ticket with POST /api/v1/vms/{id}/console-ticket and use it within 30 s',
    status: 401,
  });
}
