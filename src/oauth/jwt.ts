/**
 * JWTs read without verifying them: id_tokens and access tokens that came
 * straight from a provider's token endpoint over TLS (the login, the
 * refresh, a tool's own credential file), of which we only read a claim or
 * two. Nothing here is a trust decision.
 */

/** Payloads past this are not tokens a provider issued: not parsed. */
const MAX_PAYLOAD_CHARS = 64 * 1024;

/** The payload's claims; null unless `value` is a three-part JWT with a JSON object payload. */
export function unverifiedClaims(value: string): Record<string, unknown> | null {
  const parts = value.split('.');
  if (parts.length !== 3 || parts[1]!.length === 0 || parts[1]!.length > MAX_PAYLOAD_CHARS) return null;
  try {
    const claims: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    return typeof claims === 'object' && claims !== null && !Array.isArray(claims) ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** An unsigned (`alg: none`), secret-free JWT, for formats whose readers insist on parsing one. */
export function unsignedJwt(claims: Record<string, unknown>, signature: string): string {
  const part = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT' })}.${part(claims)}.${signature}`;
}

/** Where ChatGPT's id_tokens keep the account id (`chatgpt_account_id`) and plan. */
export const OPENAI_AUTH_CLAIM = 'https://api.openai.com/auth';

/**
 * A ChatGPT account id the gateway can send as the `chatgpt-account-id`
 * header: 1 to 256 printable ASCII characters, no space or control character.
 */
export function isChatgptAccountId(id: unknown): id is string {
  return typeof id === 'string' && /^[\x21-\x7e]{1,256}$/.test(id);
}

/** The ChatGPT account id in an OpenAI id_token, when it is one a header can carry. */
export function chatgptAccountId(idToken: string): string | null {
  const auth = unverifiedClaims(idToken)?.[OPENAI_AUTH_CLAIM];
  const id = typeof auth === 'object' && auth !== null ? (auth as Record<string, unknown>).chatgpt_account_id : undefined;
  return isChatgptAccountId(id) ? id : null;
}
