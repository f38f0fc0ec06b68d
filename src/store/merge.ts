import type { OAuthToken } from './types.js';

/**
 * SPEC §2 token merge, used after a refresh and for an incoming save:
 * access_token and expiry always come from `incoming`; refresh_token from
 * `incoming` only when present and non-empty; every other field from
 * `incoming` when present (not undefined), else from `stored`.
 */
export function mergeToken(stored: OAuthToken | null, incoming: OAuthToken): OAuthToken {
  const merged: OAuthToken = { ...(stored ?? {}), access_token: incoming.access_token, expiry: incoming.expiry };
  for (const [key, value] of Object.entries(incoming)) {
    if (key === 'access_token' || key === 'expiry' || value === undefined) continue;
    if (key === 'refresh_token' && (typeof value !== 'string' || value === '')) continue;
    merged[key] = value;
  }
  return merged;
}
