/**
 * Error codes that may cross the socket (SPEC §4). Anything else is host-local
 * and is reported to a client as INTERNAL_ERROR with a safe message.
 */
export const WIRE_ERROR_CODES = [
  'NOT_FOUND',
  'INVALID_REQUEST',
  'RATE_LIMITED',
  'UNAUTHORIZED',
  'INTERNAL_ERROR',
  'UNKNOWN_VERSION',
  'SESSION_NOT_FOUND',
  'SESSION_EXPIRED',
  'SESSION_ALREADY_USED',
  'EXCHANGE_FAILED',
  'PROVIDER_NOT_FOUND',
  'REAUTH_REQUIRED',
] as const;
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

/** Host-local failures: never sent as such, but stable for callers and tests. */
export const LOCAL_ERROR_CODES = [
  'STORE_UNAVAILABLE', // keyring not answering, data dir unreadable
  'CORRUPT_ENTRY', // an entry exists but cannot be decrypted or parsed
  'BAD_PASSPHRASE', // CREDPROXY_PASSPHRASE does not open the store
  'CONFIG_INVALID',
  'TIMEOUT',
  'CONNECTION_LOST',
  'LOCK_FAILED',
  'USAGE',
  'CANCELLED', // the user stopped an interactive operation (Ctrl+C during a login)
] as const;
export type LocalErrorCode = (typeof LOCAL_ERROR_CODES)[number];

export type ErrorCode = WireErrorCode | LocalErrorCode;

const wireCodes: ReadonlySet<string> = new Set(WIRE_ERROR_CODES);
export function isWireErrorCode(code: string): code is WireErrorCode {
  return wireCodes.has(code);
}

/**
 * The one error type of credproxy. `message` must be built from known-safe
 * values only (names, codes, numbers): it can reach the socket and the logs.
 */
export class CredproxyError extends Error {
  readonly code: ErrorCode;
  readonly retryAfter: number | undefined;

  constructor(code: ErrorCode, message: string, options?: { retryAfter?: number; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CredproxyError';
    this.code = code;
    this.retryAfter = options?.retryAfter;
  }
}

export function isCredproxyError(err: unknown, code?: ErrorCode): err is CredproxyError {
  return err instanceof CredproxyError && (code === undefined || err.code === code);
}
