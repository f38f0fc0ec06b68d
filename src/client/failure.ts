import { CredproxyError, isWireErrorCode } from '../errors.js';

/**
 * Turn a proxy error answer into the error a store caller sees: the same
 * code and retryAfter, with a message that names the operation, the code
 * and (for RATE_LIMITED) the wait. Local failures such as CONNECTION_LOST
 * and TIMEOUT pass through untouched so their wording stays exact.
 */
export function storeFailure(action: string, err: unknown): unknown {
  if (!(err instanceof CredproxyError) || !isWireErrorCode(err.code)) return err;
  const wait = err.retryAfter === undefined ? '' : ` (retry after ${err.retryAfter} s)`;
  return new CredproxyError(err.code, `${action} failed: ${err.code}${wait}: ${err.message}`, {
    cause: err,
    ...(err.retryAfter === undefined ? {} : { retryAfter: err.retryAfter }),
  });
}

/** An answer whose data does not have the shape its op promises. */
export function malformedData(op: string): CredproxyError {
  return new CredproxyError('INTERNAL_ERROR', `The credential proxy answered ${op} with data of the wrong shape.`);
}

export function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}
