import type { OAuthToken, SanitizedToken } from './types.js';

/**
 * The one function that turns a stored token into what may leave the host
 * process: every field but `refresh_token`. Every token-bearing answer and
 * every incoming save_token payload goes through it.
 */
export function sanitizeToken(token: OAuthToken): SanitizedToken {
  const { refresh_token: _dropped, ...rest } = token;
  return rest as SanitizedToken;
}
