import type * as oidc from 'openid-client';
import { openidClient } from './oidc-module.js';
import type { Flow, ProviderConfig } from '../config.js';
import { CredproxyError } from '../errors.js';
import type { OAuthToken } from '../store/types.js';
import { classifyProviderError, type ProviderError } from './errors.js';
import { createTransport, DEFAULT_PROVIDER_TIMEOUT_MS, type FetchLike } from './transport.js';
import type { OAuthProvider } from './types.js';
import { isInsecureLoopback } from './url-policy.js';

/** Lifetime assumed when a token response carries no expires_in and the provider sets no default. */
export const FALLBACK_EXPIRES_IN_SECONDS = 3600;

export interface ProviderRuntimeOptions {
  /** Per network call (SPEC §5: 15 s). */
  timeoutMs?: number;
  /** Wall clock in ms; injectable for tests. */
  now?: () => number;
  /** HTTP implementation under the transport rules; injectable for tests. */
  fetch?: FetchLike;
}

type EndpointField = 'authorization_endpoint' | 'token_endpoint' | 'device_authorization_endpoint' | 'revocation_endpoint';
const ENDPOINT_FIELDS: readonly EndpointField[] = ['authorization_endpoint', 'token_endpoint', 'device_authorization_endpoint', 'revocation_endpoint'];

/** The token fields credproxy derives itself; everything else in a response is kept as is. */
const DERIVED_FIELDS = new Set(['access_token', 'expires_in', 'token_type']);

/**
 * An OAuth provider on top of openid-client: the library builds the token
 * requests, authenticates the client and validates the answers; this class
 * supplies endpoints (explicit or discovered), transport rules and the
 * mapping of answers and failures.
 */
export class OpenIdProvider implements OAuthProvider {
  readonly name: string;
  readonly settings: Readonly<ProviderConfig>;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly fetchImpl: FetchLike | undefined;
  private discovered: Promise<oidc.ServerMetadata> | null = null;

  constructor(name: string, settings: ProviderConfig, options: ProviderRuntimeOptions = {}) {
    this.name = name;
    this.settings = Object.freeze({ ...settings });
    this.timeoutMs = options.timeoutMs ?? DEFAULT_PROVIDER_TIMEOUT_MS;
    this.now = options.now ?? Date.now;
    this.fetchImpl = options.fetch;
  }

  get flow(): Flow {
    return this.settings.flow;
  }

  get canRefresh(): boolean {
    return this.settings.token_endpoint !== undefined || this.settings.issuer !== undefined;
  }

  private neededEndpoints(): EndpointField[] {
    const flowEndpoint: EndpointField = this.settings.flow === 'device_code' ? 'device_authorization_endpoint' : 'authorization_endpoint';
    return ['token_endpoint', flowEndpoint];
  }

  private explicitEndpoints(): Partial<Record<EndpointField, string>> {
    const out: Partial<Record<EndpointField, string>> = {};
    for (const f of ENDPOINT_FIELDS) {
      const v = this.settings[f];
      if (v !== undefined) out[f] = v;
    }
    return out;
  }

  private async clientAuth(): Promise<{ method: string; auth: oidc.ClientAuth }> {
    const lib = await openidClient();
    const secret = this.settings.client_secret;
    const method = this.settings.token_endpoint_auth_method ?? (secret === undefined ? 'none' : 'client_secret_post');
    if (method === 'none') return { method, auth: lib.None() };
    if (method === 'client_secret_basic') return { method, auth: lib.ClientSecretBasic(secret) };
    return { method, auth: lib.ClientSecretPost(secret) };
  }

  private transport(signal: AbortSignal | undefined, tokenEndpoint: string | undefined): oidc.CustomFetch {
    return createTransport({
      timeoutMs: this.timeoutMs,
      signal,
      jsonBodyUrl: this.settings.token_request_format === 'json' ? tokenEndpoint : undefined,
      errorsWithStatus200: this.settings.errors_with_status_200 === true,
      fetch: this.fetchImpl,
    });
  }

  /** Explicit endpoints win; discovery (once, cached on success) fills in the rest. */
  private async metadata(): Promise<oidc.ServerMetadata> {
    const explicit = this.explicitEndpoints();
    if (this.neededEndpoints().every((f) => explicit[f] !== undefined)) {
      const issuer = this.settings.issuer ?? new URL(explicit.token_endpoint!).origin;
      return { issuer, ...explicit };
    }
    if (!this.discovered) {
      const attempt = this.discover();
      this.discovered = attempt;
      // A failed discovery must not stick: the next call tries again.
      attempt.catch(() => {
        if (this.discovered === attempt) this.discovered = null;
      });
    }
    return { ...(await this.discovered), ...explicit };
  }

  private async discover(): Promise<oidc.ServerMetadata> {
    const issuer = new URL(this.settings.issuer!);
    try {
      const lib = await openidClient();
      const { method, auth } = await this.clientAuth();
      // Discovery is shared by concurrent callers, so it honours only the timeout, not one caller's signal.
      const config = await lib.discovery(issuer, this.settings.client_id, { token_endpoint_auth_method: method }, auth, {
        execute: isInsecureLoopback(issuer) ? [lib.allowInsecureRequests] : [],
        timeout: Math.max(1, Math.ceil(this.timeoutMs / 1000)),
        [lib.customFetch]: this.transport(undefined, undefined),
      });
      return { ...config.serverMetadata() };
    } catch (err) {
      throw this.toError('discovery', err);
    }
  }

  async configuration(signal?: AbortSignal): Promise<oidc.Configuration> {
    const metadata = await this.metadata();
    const lib = await openidClient();
    const { method, auth } = await this.clientAuth();
    const config = new lib.Configuration(metadata, this.settings.client_id, { token_endpoint_auth_method: method }, auth);
    // The library's own timeout is a backstop; the transport enforces the exact one.
    config.timeout = Math.max(1, Math.ceil(this.timeoutMs / 1000));
    const urls = [metadata.issuer, ...ENDPOINT_FIELDS.map((f) => metadata[f])].filter((u): u is string => typeof u === 'string');
    // http is only ever allowed for loopback IPs; the transport refuses anything else regardless.
    if (urls.some((u) => URL.canParse(u) && isInsecureLoopback(new URL(u)))) lib.allowInsecureRequests(config);
    config[lib.customFetch] = this.transport(signal, metadata.token_endpoint);
    return config;
  }

  async refresh(token: OAuthToken, signal?: AbortSignal): Promise<OAuthToken> {
    const refreshToken = token.refresh_token;
    if (typeof refreshToken !== 'string' || refreshToken === '') {
      throw new CredproxyError('REAUTH_REQUIRED', `the stored ${this.name} token has no refresh token`);
    }
    try {
      const config = await this.configuration(signal);
      const response = await (await openidClient()).refreshTokenGrant(config, refreshToken);
      return this.tokenFromResponse(response);
    } catch (err) {
      throw this.toError('refresh', err, signal);
    }
  }

  tokenFromResponse(response: oidc.TokenEndpointResponse): OAuthToken {
    const nowSec = Math.floor(this.now() / 1000);
    const lifetime = typeof response.expires_in === 'number' && Number.isFinite(response.expires_in) && response.expires_in >= 0
      ? Math.floor(response.expires_in)
      : (this.settings.default_expires_in ?? FALLBACK_EXPIRES_IN_SECONDS);
    const type = response.token_type;
    const token: OAuthToken = {
      access_token: response.access_token,
      expiry: nowSec + lifetime,
      // The library lower-cases token_type; "Bearer" is the spelling HTTP clients expect.
      token_type: type === 'bearer' ? 'Bearer' : type === 'dpop' ? 'DPoP' : type,
    };
    for (const [key, value] of Object.entries(response)) {
      if (DERIVED_FIELDS.has(key) || value === undefined || value === null) continue;
      token[key] = value;
    }
    return token;
  }

  toError(action: string, err: unknown, signal?: AbortSignal): ProviderError {
    return classifyProviderError(err, {
      provider: this.name,
      action,
      revokedCodes: this.settings.revoked_error_codes,
      signal,
      timeoutMs: this.timeoutMs,
    });
  }
}
