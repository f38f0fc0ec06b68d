import { openidClientIfLoaded } from './oidc-module.js';
import { CredproxyError } from '../errors.js';

/**
 * How a provider call failed, which decides what the refresh path does:
 * - revoked:   the refresh token is dead (invalid_grant); clear it, ask for a new login
 * - rejected:  the provider refused for another reason (4xx, malformed answer); never retried
 * - transient: network trouble, timeouts, 5xx; worth retrying
 * - aborted:   credproxy itself cancelled the call (shutdown, budget)
 */
export type ProviderFailureKind = 'revoked' | 'rejected' | 'transient' | 'aborted';

/**
 * A failed provider call. The message holds only the provider name, the
 * action, the provider's error CODE and an HTTP status: never an
 * error_description, a body, headers or the library's error object, which
 * may echo tokens. Deliberately no `cause`, so nothing raw is ever serialized.
 */
export class ProviderError extends CredproxyError {
  readonly kind: ProviderFailureKind;
  /** The provider's OAuth error code (sanitized), when it sent one. */
  readonly oauthError: string | undefined;
  readonly status: number | undefined;

  constructor(kind: ProviderFailureKind, message: string, details: { oauthError?: string; status?: number } = {}) {
    super(kind === 'revoked' ? 'REAUTH_REQUIRED' : 'INTERNAL_ERROR', message);
    this.name = 'ProviderError';
    this.kind = kind;
    this.oauthError = details.oauthError;
    this.status = details.status;
  }
}

export function isProviderError(err: unknown, kind?: ProviderFailureKind): err is ProviderError {
  return err instanceof ProviderError && (kind === undefined || err.kind === kind);
}

/** Thrown by the transport when a request would leave the allowed URLs (https or loopback http). */
export class RefusedRequestError extends Error {
  constructor() {
    super('request to a URL that is neither https nor loopback http refused');
    this.name = 'RefusedRequestError';
  }
}

/** RFC 6749 error codes are short ASCII words; anything else is not echoed. */
export function safeErrorCode(value: unknown): string {
  return typeof value === 'string' && /^[A-Za-z0-9_.-]{1,64}$/.test(value) ? value : 'unrecognized_error';
}

export interface ClassifyContext {
  provider: string;
  /** What was being done, e.g. "refresh", "discovery", "token exchange". */
  action: string;
  /** Codes besides invalid_grant that mean the refresh token is revoked. */
  revokedCodes?: readonly string[];
  /** The caller's signal: when it fired, the failure is ours, not the provider's. */
  signal?: AbortSignal;
  timeoutMs: number;
}

function duration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 1000)} s`;
}

function statusOf(value: unknown): number | undefined {
  return value instanceof Response ? value.status : undefined;
}

function causeChain(err: unknown): unknown[] {
  const chain: unknown[] = [];
  let cur: unknown = err;
  while (cur !== undefined && cur !== null && chain.length < 8) {
    chain.push(cur);
    cur = cur instanceof Error ? cur.cause : undefined;
  }
  return chain;
}

/** Turn whatever openid-client / fetch threw into a ProviderError with a safe message. */
export function classifyProviderError(err: unknown, ctx: ClassifyContext): ProviderError {
  if (err instanceof ProviderError) return err;
  const what = `${ctx.provider} ${ctx.action} failed`;
  const byStatus = (status: number | undefined, code: string | undefined): ProviderError => {
    const shown = code ?? (status !== undefined ? `http_${status}` : 'invalid_response');
    if (status !== undefined && status >= 500) return new ProviderError('transient', `${what}: provider unavailable (HTTP ${status})`, { status, oauthError: code });
    if (code === 'invalid_grant' || (code !== undefined && ctx.revokedCodes?.includes(code))) {
      return new ProviderError('revoked', `${what}: ${code}`, { status, oauthError: code });
    }
    return new ProviderError('rejected', `${what}: ${shown}`, { status, oauthError: code });
  };

  if (ctx.signal?.aborted) return new ProviderError('aborted', `${what}: cancelled`);
  // Not loaded: nothing thrown can be one of its errors.
  const oidc = openidClientIfLoaded();
  if (oidc && err instanceof oidc.ResponseBodyError) return byStatus(err.status, safeErrorCode(err.error));
  if (oidc && err instanceof oidc.WWWAuthenticateChallengeError) {
    const param = err.cause.map((c) => c.parameters.error).find((e) => e !== undefined);
    return byStatus(err.status, param === undefined ? undefined : safeErrorCode(param));
  }
  const chain = causeChain(err);
  if (chain.some((e) => e instanceof RefusedRequestError)) {
    return new ProviderError('rejected', `${what}: endpoint is neither https nor loopback http`, { oauthError: 'insecure_endpoint' });
  }
  if (chain.some((e) => e instanceof DOMException && e.name === 'TimeoutError')) {
    return new ProviderError('transient', `${what}: no answer within ${duration(ctx.timeoutMs)}`);
  }
  if (oidc && err instanceof oidc.ClientError) {
    switch (err.code) {
      case 'OAUTH_TIMEOUT':
        return new ProviderError('transient', `${what}: no answer within ${duration(ctx.timeoutMs)}`);
      case 'OAUTH_RESPONSE_IS_NOT_CONFORM':
      case 'OAUTH_RESPONSE_IS_NOT_JSON': {
        const status = statusOf(err.cause);
        return byStatus(status === 200 ? undefined : status, status === 200 ? 'invalid_response' : undefined);
      }
      case 'OAUTH_HTTP_REQUEST_FORBIDDEN':
      case 'OAUTH_REQUEST_PROTOCOL_FORBIDDEN':
        return new ProviderError('rejected', `${what}: endpoint is neither https nor loopback http`, { oauthError: 'insecure_endpoint' });
      case undefined:
        break;
      default:
        return new ProviderError('rejected', `${what}: invalid_response`, { oauthError: 'invalid_response' });
    }
  }
  const typeError = chain.find((e): e is TypeError => e instanceof TypeError);
  if (typeError) {
    const code = (typeError as TypeError & { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_INVALID_ARG')) {
      return new ProviderError('rejected', `${what}: invalid client configuration`, { oauthError: 'client_error' });
    }
    return new ProviderError('transient', `${what}: network error`);
  }
  return new ProviderError('transient', `${what}: unexpected error`);
}
