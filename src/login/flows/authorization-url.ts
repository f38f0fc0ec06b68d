import * as oidc from 'openid-client';
import type { OAuthProvider } from '../../oauth/types.js';
import type { PkcePair } from './pkce.js';

/** The provider's configured scopes as the `scope` parameter, when it has any. */
export function scopeParam(provider: OAuthProvider): Record<string, string> {
  const scopes = provider.settings.scopes;
  return scopes && scopes.length > 0 ? { scope: scopes.join(' ') } : {};
}

/**
 * OpenID Connect Core §11: a request for offline_access must carry
 * prompt=consent, and conforming servers drop the scope otherwise, so the
 * login ends without a refresh token. Sent for OpenID providers (an `openid`
 * scope or a discovery issuer) unless the config sets its own prompt or turns
 * this off (`offline_consent: false`).
 */
export function consentParam(provider: OAuthProvider): Record<string, string> {
  const s = provider.settings;
  const scopes = s.scopes ?? [];
  if (s.offline_consent === false || s.authorization_params?.prompt !== undefined) return {};
  if (!scopes.includes('offline_access')) return {};
  const openId = scopes.includes('openid') || s.issuer !== undefined;
  return openId ? { prompt: 'consent' } : {};
}

/**
 * The authorization request of a code flow: the provider's extra parameters
 * first, so the ones credproxy owns (redirect, state, challenge) always win
 * (the config schema refuses overriding them anyway).
 */
export function authorizationUrl(config: oidc.Configuration, provider: OAuthProvider, redirectUri: string, pkce: PkcePair): URL {
  return oidc.buildAuthorizationUrl(config, {
    ...consentParam(provider),
    ...provider.settings.authorization_params,
    ...scopeParam(provider),
    redirect_uri: redirectUri,
    state: pkce.state,
    code_challenge: pkce.challenge,
    code_challenge_method: 'S256',
  });
}
