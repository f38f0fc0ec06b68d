import type { OAuthToken, SanitizedToken } from '../store/types.js';
import { sanitizeToken } from '../store/sanitize.js';

/**
 * A finished login's answer: the sanitized token plus, when the provider
 * sent no refresh token, `login_warning` saying so in plain words. Without a
 * refresh token the session dies at its first expiry, and the person who
 * logged in should learn that now rather than when the agent fails.
 */
export type LoginAnswer = SanitizedToken & { login_warning?: string };

/** The warning for a token that cannot be refreshed; undefined when it can. */
export function unrenewableWarning(token: OAuthToken): string | undefined {
  if (typeof token.refresh_token === 'string' && token.refresh_token !== '') return undefined;
  const when = Number.isFinite(token.expiry) ? new Date(token.expiry * 1000).toISOString() : 'an unknown time';
  return `this login cannot be renewed; it expires at ${when} (the provider sent no refresh token: log in again then)`;
}

export function loginAnswer(token: OAuthToken): LoginAnswer {
  const warning = unrenewableWarning(token);
  return warning === undefined ? sanitizeToken(token) : { ...sanitizeToken(token), login_warning: warning };
}
