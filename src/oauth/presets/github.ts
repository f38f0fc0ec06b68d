import type { ProviderConfig } from '../../config.js';

/**
 * GitHub, with the public OAuth app of the GitHub CLI (`gh auth login`).
 * Quirks: the token endpoint reports errors with HTTP 200, and a dead
 * refresh token as `bad_refresh_token`. OAuth-app tokens usually come
 * without expires_in or refresh_token (they do not expire until revoked);
 * they are stored with a one-year nominal lifetime. GitHub App tokens do
 * expire (8 h) and come with a refresh token.
 */
export const github: ProviderConfig = {
  flow: 'device_code',
  issuer: 'https://github.com',
  device_authorization_endpoint: 'https://github.com/login/device/code',
  token_endpoint: 'https://github.com/login/oauth/access_token',
  client_id: '178c6fc778ccc68e1d6a',
  scopes: ['repo', 'read:org', 'gist'],
  errors_with_status_200: true,
  revoked_error_codes: ['bad_refresh_token'],
  default_expires_in: 365 * 24 * 3600,
  /** Gateway: the API these tokens are for. */
  api_base: 'https://api.github.com',
};
