import { unverifiedClaims } from '../oauth/jwt.js';
import type { OAuthToken } from '../store/types.js';

const MAX_ACCOUNT_CHARS = 256;

/**
 * Who a fresh login is for, from the id_token the provider returned with it
 * (OIDC `email`, else `sub`): shown on the host so that an account swapped
 * by a hostile sandbox is visible. The token came straight from the
 * provider's token endpoint, so its claims are read without verifying the
 * signature; they are only displayed. null when there is no usable claim.
 */
export function accountOf(token: OAuthToken): string | null {
  const idToken = token.id_token;
  if (typeof idToken !== 'string') return null;
  const claims = unverifiedClaims(idToken);
  if (claims === null) return null;
  const { email, sub } = claims;
  const value = typeof email === 'string' && email !== '' ? email : typeof sub === 'string' && sub !== '' ? `sub:${sub}` : null;
  if (value === null) return null;
  // It ends up on a terminal, where it must read as what it is: no control
  // characters, no bidirectional overrides or other invisible formatting
  // (some providers let users pick their sub or email), bounded length.
  const clean = value.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu, '?');
  return clean.length > MAX_ACCOUNT_CHARS ? `${clean.slice(0, MAX_ACCOUNT_CHARS)}...` : clean;
}
