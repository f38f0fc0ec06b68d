import { CredproxyError } from '../../errors.js';
import { isProviderError } from '../../oauth/errors.js';
import type { OAuthProvider } from '../../oauth/types.js';
import type { FlowOutcome } from './types.js';

export type FlowFailure = Extract<FlowOutcome, { ok: false }>;

/**
 * Why a login step failed, as a wire code and a safe text. Provider errors
 * are classified by the provider (its message names only the provider, the
 * step and the OAuth error code); anything else is reduced to a fixed text.
 */
export function flowFailure(provider: OAuthProvider, action: string, err: unknown, signal?: AbortSignal): FlowFailure {
  if (err instanceof CredproxyError && !isProviderError(err)) {
    return { ok: false, code: err.code === 'SESSION_EXPIRED' ? 'SESSION_EXPIRED' : 'EXCHANGE_FAILED', error: err.message };
  }
  const e = provider.toError(action, err, signal);
  switch (e.oauthError) {
    case 'expired_token':
      return { ok: false, code: 'SESSION_EXPIRED', error: `the ${provider.name} device code expired; start the login again` };
    case 'access_denied':
      return { ok: false, code: 'EXCHANGE_FAILED', error: `the ${provider.name} login was denied` };
    default:
      return { ok: false, code: 'EXCHANGE_FAILED', error: e.message };
  }
}

/** The same, thrown: a code exchange answered straight to the caller. */
export function exchangeError(provider: OAuthProvider, err: unknown, signal?: AbortSignal): CredproxyError {
  const f = flowFailure(provider, 'code exchange', err, signal);
  return new CredproxyError(f.code, f.error);
}

export function cancelledOutcome(): FlowFailure {
  return { ok: false, code: 'SESSION_NOT_FOUND', error: 'the login was cancelled' };
}
