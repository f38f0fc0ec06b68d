import * as oidc from 'openid-client';
import type { OAuthProvider } from '../../oauth/types.js';
import type { PkcePair } from './pkce.js';

/** The provider's configured scopes as the `scope` parameter, when it has any. */
export function scopeParam(provider: OAuthProvider): Record<string, string> {
  const scopes = provider.settings.scopes;
  return scopes && scopes.length > 0 ? { scope: scopes.join(' ') } : {};
}

/**
 * The authorization request of a code flow: the provider's extra parameters
 * first, so the ones credproxy owns (redirect, state, challenge) always win
 * (the config schema refuses overriding them anyway).
 */
export function authorizationUrl(config: oidc.Configuration, provider: OAuthProvider, redirectUri: string, pkce: PkcePair): URL {
  return oidc.buildAuthorizationUrl(config, {
    ...provider.settings.authorization_params,
    ...scopeParam(provider),
    redirect_uri: redirectUri,
    state: pkce.state,
    code_challenge: pkce.challenge,
    code_challenge_method: 'S256',
  });
}
