import { CredproxyError } from '../errors.js';
import type { OAuthToken } from './types.js';

/**
 * What a token written from the sandbox (save_token) may carry. The host's
 * entry belongs to the host: the sandbox can replace the short-lived part
 * (access token, expiry, type, scope) and nothing else.
 */
export const SANDBOX_TOKEN_LIMITS = {
  /** Longest accepted string per field, in UTF-16 code units. */
  access_token: 16 * 1024,
  token_type: 64,
  scope: 4096,
  /** All accepted fields together (their JSON): room for the largest id_token plus the rest. */
  totalChars: 2 * 1024 * 1024 + 64 * 1024,
  /** An expiry further out than this is clamped to it: the host must get to refresh. */
  horizonSeconds: 7 * 24 * 3600,
} as const;

/**
 * Provider extras a sandbox save may set, with their size bound. They are
 * kept only when the save creates the entry (there is no host data yet, and
 * such an entry has no refresh token, so the host never refreshes it); into
 * an existing entry the host's extras stay as they are.
 */
export const SANDBOX_EXTRA_FIELDS: Readonly<Record<string, number>> = {
  // Large on purpose: llxprt-code saves tokens of 70 KB and more over protocol version 2 (SPEC §8).
  id_token: 2 * 1024 * 1024,
  account_id: 256,
  resource_url: 2048,
};

const CORE_FIELDS = ['access_token', 'token_type', 'scope'] as const;
// Control characters make no sense in any of these and would end up in terminals and headers.
const CONTROL = /[\u0000-\u001f\u007f]/;

function field(raw: Record<string, unknown>, name: string, max: number, required: boolean): string | undefined {
  const value = raw[name];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value.length === 0) throw bad(`token.${name} must be a non-empty string`);
  if (value.length > max) throw bad(`token.${name} is longer than ${max} characters`);
  if (CONTROL.test(value)) throw bad(`token.${name} contains control characters`);
  return value;
}

function bad(reason: string): CredproxyError {
  return new CredproxyError('INVALID_REQUEST', reason);
}

/**
 * The token a sandbox save_token may write, built field by field from the
 * (already schema-checked, refresh_token-free) payload: unknown fields are
 * dropped, known ones bounded, the expiry clamped to now + horizon.
 */
export function sandboxToken(raw: Record<string, unknown>, nowSeconds: number): OAuthToken {
  const token: OAuthToken = { access_token: field(raw, 'access_token', SANDBOX_TOKEN_LIMITS.access_token, true)!, expiry: 0 };
  const expiry = raw.expiry;
  if (typeof expiry !== 'number' || !Number.isFinite(expiry) || expiry < 0) throw bad('token.expiry must be a number of Unix seconds');
  token.expiry = Math.min(Math.floor(expiry), Math.floor(nowSeconds) + SANDBOX_TOKEN_LIMITS.horizonSeconds);
  for (const name of CORE_FIELDS.slice(1)) {
    const value = field(raw, name, SANDBOX_TOKEN_LIMITS[name], false);
    if (value !== undefined) token[name] = value;
  }
  for (const [name, max] of Object.entries(SANDBOX_EXTRA_FIELDS)) {
    const value = field(raw, name, max, false);
    if (value !== undefined) token[name] = value;
  }
  if (JSON.stringify(token).length > SANDBOX_TOKEN_LIMITS.totalChars) throw bad(`token is larger than ${SANDBOX_TOKEN_LIMITS.totalChars} characters`);
  return token;
}

/**
 * The merge for a sandbox save: a new entry takes the sandbox token as is;
 * an existing one keeps every host field (refresh token and extras) and
 * takes only the access token, expiry, token type and scope.
 */
export function mergeSandboxSave(stored: OAuthToken | null, incoming: OAuthToken): OAuthToken {
  if (stored === null) return { ...incoming };
  const merged: OAuthToken = { ...stored, access_token: incoming.access_token, expiry: incoming.expiry };
  if (incoming.token_type !== undefined) merged.token_type = incoming.token_type;
  if (incoming.scope !== undefined) merged.scope = incoming.scope;
  return merged;
}

/** What a remove_token from the sandbox did. */
export type SandboxRemoval = 'entry' | 'access_token';

/**
 * remove_token from the sandbox removes what the sandbox can see. An entry
 * without a refresh token goes entirely; one with a refresh token keeps it
 * (the host's login is not the sandbox's to end) and has its access token
 * marked expired, so it is never served again: the next get_token
 * refreshes. Returns the token to store, or null to delete the entry.
 */
export function sandboxRemoval(stored: OAuthToken): { keep: OAuthToken | null; removed: SandboxRemoval } {
  if (typeof stored.refresh_token !== 'string' || stored.refresh_token === '') return { keep: null, removed: 'entry' };
  return { keep: { ...stored, expiry: 0 }, removed: 'access_token' };
}
