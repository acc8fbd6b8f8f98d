/**
 * Errors a user can reach: a stable code, a message that says what is wrong, a hint that says
 * what to do, and the cause. The CLI prints them one way, the API maps them to a JSON body.
 * A bug is a plain Error and is never caught to be hidden.
 */
import { statusOf } from './error-codes.js';

export type ErrorCode = `FD_${string}`;

export interface FdErrorOptions {
  hint?: string;
  cause?: unknown;
  /**
   * HTTP status: only for an error relayed from another API (its answer's status). Anything
   * thrown here gets its code's status from the catalog (error-codes.ts).
   */
  status?: number;
  details?: unknown;
}

export class FdError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly status: number;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, opts: FdErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FdError';
    this.code = code;
    this.hint = opts.hint;
    this.status = opts.status ?? statusOf(code);
    this.details = opts.details;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details?: unknown } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      ...(this.details === undefined ? {} : { details: this.details }),
    };
  }
}

export function isFdError(err: unknown, code?: ErrorCode): err is FdError {
  return err instanceof FdError && (code === undefined || err.code === code);
}

/** True for a Node system error with the given errno code (ENOENT, EEXIST, ...). */
export function isErrno(err: unknown, code: string): err is NodeJS.ErrnoException {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}
