import type { Configuration, TokenEndpointResponse } from 'openid-client';
import type { Flow, ProviderConfig } from '../config.js';
import type { OAuthToken } from '../store/types.js';
import type { ProviderError } from './errors.js';

/**
 * One OAuth provider as credproxy uses it: refresh now, login flows later.
 * Every network call honours `signal`, gets the per-call timeout, and fails
 * with a ProviderError whose message is safe to show and log.
 */
export interface OAuthProvider {
  readonly name: string;
  readonly flow: Flow;
  /** The validated settings (preset or config file) this provider was built from. */
  readonly settings: Readonly<ProviderConfig>;
  /** True when a token for this provider can be refreshed at all (it has a token endpoint). */
  readonly canRefresh: boolean;
  /**
   * Exchange `token.refresh_token` for a new token. Returns only what the
   * provider answered (mapped to an OAuthToken); the caller merges it with
   * the stored token (SPEC §2).
   */
  refresh(token: OAuthToken, signal?: AbortSignal): Promise<OAuthToken>;
  /**
   * An openid-client Configuration for one call sequence (a login flow),
   * wired with this provider's transport rules (URL policy, timeout, quirks)
   * and `signal`. Endpoint discovery, when needed, happens once and is cached.
   */
  configuration(signal?: AbortSignal): Promise<Configuration>;
  /** Map a token endpoint answer to a stored token (expiry from expires_in, extra fields kept). */
  tokenFromResponse(response: TokenEndpointResponse): OAuthToken;
  /** Classify an error from a call made with configuration() into a safe ProviderError. */
  toError(action: string, err: unknown, signal?: AbortSignal): ProviderError;
}
