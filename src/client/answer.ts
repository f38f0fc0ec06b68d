import { CredproxyError, isWireErrorCode, type WireErrorCode } from '../errors.js';
import { PROTOCOL_VERSION } from '../protocol/messages.js';

/** A well-formed answer frame from the proxy, success or error. */
export type Answer =
  | { ok: true; data: Record<string, unknown> }
  | { ok: false; code: WireErrorCode; error: string; retryAfter: number | undefined };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Read the result part of an answer frame (SPEC §4). Returns null for
 * anything that does not follow the protocol: the caller treats that as a
 * broken connection, never as a result.
 */
export function parseAnswer(frame: Record<string, unknown>, version = PROTOCOL_VERSION): Answer | null {
  // Any version from 1 up to the agreed one: the envelope is the same.
  if (typeof frame.v !== 'number' || !Number.isInteger(frame.v) || frame.v < PROTOCOL_VERSION || frame.v > version) return null;
  if (frame.ok === true) {
    return isRecord(frame.data) ? { ok: true, data: frame.data } : null;
  }
  if (frame.ok === false) {
    const { code, error, retryAfter } = frame;
    if (typeof code !== 'string' || !isWireErrorCode(code) || typeof error !== 'string') return null;
    const validRetry = typeof retryAfter === 'number' && Number.isInteger(retryAfter) && retryAfter >= 1;
    return { ok: false, code, error, retryAfter: validRetry ? retryAfter : undefined };
  }
  return null;
}

/** An error answer as the error a caller sees: the server's code, text and retryAfter. */
export function answerError(answer: Extract<Answer, { ok: false }>): CredproxyError {
  return new CredproxyError(answer.code, answer.error, answer.retryAfter === undefined ? undefined : { retryAfter: answer.retryAfter });
}
