import { timingSafeEqual } from 'node:crypto';
import { chatgptAccountId } from '../oauth/jwt.js';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { OAuthToken } from '../store/types.js';
import type { Route } from './routes.js';
import { containsSecret } from './scan.js';
import { connectionTokens, HOP_BY_HOP } from '../hop-by-hop.js';

/** Hop-by-hop headers, plus ones that describe the client's request to us. */
const NOT_FORWARDED = new Set([
  ...HOP_BY_HOP,
  'host',
  // Node answers 100-continue to the client itself; the upstream request is sent whole.
  'expect',
]);

/**
 * Response headers never passed to the sandbox: a cookie the API sets is a
 * session credential of its own (and inbound cookies are dropped anyway).
 */
const DROPPED_RESPONSE_HEADERS = new Set(['set-cookie', 'set-cookie2']);

/** Every header a client could carry a credential in: all are removed before the real one goes in. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'x-api-key', 'x-goog-api-key', 'api-key', 'cookie', 'chatgpt-account-id']);

/** Anthropic refuses OAuth tokens on the API unless this beta is listed. */
export const ANTHROPIC_OAUTH_BETA = 'oauth-2025-04-20';

function same(a: string, b: Buffer): boolean {
  const ab = Buffer.from(a, 'utf8');
  return ab.length === b.length && timingSafeEqual(ab, b);
}

/**
 * The run's capability token is the placeholder: accepted in whichever
 * header the route's client uses (Authorization: Bearer, x-api-key,
 * x-goog-api-key). Compared in constant time.
 */
export function hasPlaceholder(headers: IncomingHttpHeaders, placeholder: Buffer): boolean {
  const candidates: string[] = [];
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) candidates.push(m[1]!);
  }
  for (const name of ['x-api-key', 'x-goog-api-key'] as const) {
    const v = headers[name];
    if (typeof v === 'string') candidates.push(v.trim());
  }
  let ok = false;
  // Every candidate is compared, so timing does not tell which header matched.
  for (const c of candidates) ok = same(c, placeholder) || ok;
  return ok;
}

/** What the real credential is for this request. */
export interface Injection {
  /**
   * The secret itself (access token or key): what responses are scanned
   * for. The refresh token and id_token never reach the upstream, so it has
   * no way to echo them.
   */
  secret: string;
  headers: Record<string, string>;
}

/** The credential headers for an OAuth route, with its provider's quirks. */
export function oauthInjection(route: Route & { kind: 'oauth' }, token: OAuthToken): Injection {
  const headers: Record<string, string> = { authorization: `Bearer ${token.access_token}` };
  if (route.quirks.includes('codex-account')) {
    const account = codexAccountId(token);
    if (account !== null) headers['chatgpt-account-id'] = account;
  }
  return { secret: token.access_token, headers };
}

export function keyInjection(route: Route & { kind: 'key' }, key: string): Injection {
  const value = route.header === 'authorization' ? `Bearer ${key}` : key;
  return { secret: key, headers: { [route.header]: value } };
}

/**
 * ChatGPT's account id: the token's `account_id` field when the login saved
 * one, else the id_token's `https://api.openai.com/auth` claim. The id_token
 * is our own stored one (from the token endpoint over TLS), so it is read
 * without verifying its signature.
 */
export function codexAccountId(token: OAuthToken): string | null {
  if (typeof token.account_id === 'string' && token.account_id !== '') return token.account_id;
  return typeof token.id_token === 'string' ? chatgptAccountId(token.id_token) : null;
}

/**
 * The headers sent upstream: the client's, minus hop-by-hop ones and every
 * credential header, plus the real credential; the upstream is asked for an
 * identity encoding so responses can be scanned.
 */
export function upstreamHeaders(inbound: IncomingHttpHeaders, route: Route, injection: Injection, host: string): OutgoingHttpHeaders {
  const drop = connectionTokens(inbound);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(inbound)) {
    if (value === undefined || NOT_FORWARDED.has(name) || CREDENTIAL_HEADERS.has(name) || drop.has(name)) continue;
    out[name] = value;
  }
  out.host = host;
  out['accept-encoding'] = 'identity';
  if (route.kind === 'oauth' && route.quirks.includes('anthropic-oauth')) {
    out['anthropic-beta'] = mergeBeta(inbound['anthropic-beta'], ANTHROPIC_OAUTH_BETA);
  }
  Object.assign(out, injection.headers);
  return out;
}

function mergeBeta(current: string | string[] | undefined, beta: string): string {
  const list = (Array.isArray(current) ? current.join(',') : (current ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (!list.includes(beta)) list.push(beta);
  return list.join(',');
}

/**
 * Response headers passed to the client: hop-by-hop ones dropped, and any
 * header whose name or value carries a secret dropped whole.
 */
export function downstreamHeaders(upstream: IncomingHttpHeaders, secrets: readonly string[]): OutgoingHttpHeaders {
  const drop = connectionTokens(upstream);
  // Names arrive lower-cased: a secret in one would still be there, only in lower case.
  const lowered = secrets.map((s) => s.toLowerCase());
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(upstream)) {
    if (value === undefined || NOT_FORWARDED.has(name) || DROPPED_RESPONSE_HEADERS.has(name) || drop.has(name)) continue;
    const values = Array.isArray(value) ? value : [value];
    if (containsSecret(name, lowered) || values.some((v) => containsSecret(v, secrets))) continue;
    out[name] = value;
  }
  return out;
}

/** The upstream's reason phrase, or undefined (Node's standard one) when it carries a secret. */
export function downstreamStatusMessage(message: string | undefined, secrets: readonly string[]): string | undefined {
  return message !== undefined && containsSecret(message, secrets) ? undefined : message;
}
