import { CredproxyError, isCredproxyError } from '../errors.js';
import { DEFAULT_BUCKET } from '../names.js';
import type { CredentialService } from '../refresh/types.js';
import type { OAuthToken, KeyStore } from '../store/types.js';
import { keyInjection, oauthInjection, type Injection } from './inject.js';
import { qwenApiBase, type Route } from './routes.js';

/** A failure the gateway answers itself, with an HTTP status and a JSON body. */
export class GatewayError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

export interface ResolvedCredential {
  injection: Injection;
  apiBase: string;
}

function loginHint(provider: string, bucket: string): string {
  return bucket === DEFAULT_BUCKET ? `credproxy login ${provider}` : `credproxy login ${provider} --bucket ${bucket}`;
}

/**
 * The gateway's way to the real credential: the same CredentialService as
 * get_token (store, cache, refresh coordinator with its single-flight and
 * cross-process lock), so there is one refresh path.
 */
export class GatewayCredentials {
  constructor(
    private readonly credentials: CredentialService,
    private readonly keys: KeyStore,
  ) {}

  /** The credential for a request; a near-expiry token is refreshed first (getToken's rule). */
  async current(route: Route): Promise<ResolvedCredential> {
    if (route.kind === 'key') {
      const key = await this.keys.getKey(route.key).catch((err: unknown) => {
        throw this.translate(route, err);
      });
      if (key === null) throw new GatewayError(401, 'authentication_error', `no API key named ${route.key} is stored on the host; add it there with \`credproxy key set ${route.key}\``);
      return { injection: keyInjection(route, key), apiBase: route.apiBase };
    }
    let token: OAuthToken | null | undefined = this.credentials.peekToken?.(route.provider, route.bucket);
    if (token === undefined) {
      token = await this.credentials.getToken(route.provider, route.bucket).catch((err: unknown) => {
        throw this.translate(route, err);
      });
    }
    if (token === null) {
      throw new GatewayError(401, 'authentication_error', `no ${route.provider} login is stored on the host; run \`${loginHint(route.provider, route.bucket)}\` on the host`);
    }
    return this.resolve(route, token);
  }

  /**
   * After the upstream answered 401 to `used`: the token now stored when
   * another request already refreshed it, else one forced refresh (joined by
   * every concurrent caller through the coordinator's single-flight, and
   * held back by its cooldown). null when there is nothing newer to try.
   */
  async afterUnauthorized(route: Route, used: string): Promise<ResolvedCredential | null> {
    if (route.kind === 'key') return null;
    try {
      const stored = await this.credentials.getToken(route.provider, route.bucket);
      if (stored !== null && stored.access_token !== used) return this.resolve(route, stored);
      const fresh = await this.credentials.refresh(route.provider, route.bucket);
      return fresh.access_token === used ? null : this.resolve(route, fresh);
    } catch (err) {
      throw this.translate(route, err);
    }
  }

  private resolve(route: Route & { kind: 'oauth' }, token: OAuthToken): ResolvedCredential {
    let apiBase = route.apiBase;
    if (apiBase === undefined) {
      apiBase = qwenApiBase(token.resource_url) ?? undefined;
      if (apiBase === undefined) throw new GatewayError(502, 'api_error', `the stored ${route.provider} token names no usable API base (resource_url); set providers.${route.provider}.api_base in config.json`);
    }
    return { injection: oauthInjection(route, token), apiBase };
  }

  /** Only codes and our own texts reach the client: a foreign error's message may carry provider data. */
  private translate(route: Route, err: unknown): GatewayError {
    if (err instanceof GatewayError) return err;
    const who = route.kind === 'oauth' ? route.provider : `key ${route.key}`;
    if (isCredproxyError(err, 'REAUTH_REQUIRED') || isCredproxyError(err, 'NOT_FOUND')) {
      const hint = route.kind === 'oauth' ? `run \`${loginHint(route.provider, route.bucket)}\` on the host` : 'store it again on the host';
      return new GatewayError(401, 'authentication_error', `the ${who} credential on the host needs a new login: ${hint}`);
    }
    if (isCredproxyError(err, 'RATE_LIMITED')) return new GatewayError(429, 'rate_limit_error', `the ${who} token was refreshed moments ago; retry shortly`);
    const code = err instanceof CredproxyError ? err.code : 'INTERNAL_ERROR';
    return new GatewayError(503, 'api_error', `the ${who} credential is unavailable on the host (${code})`);
  }
}
