import type { ProviderConfig } from '../../config.js';

/**
 * Google, as the Gemini CLI signs in (Code Assist). An installed-app client:
 * its "secret" is public by Google's design. Quirks: a refresh token is only
 * issued with access_type=offline, and reliably only with prompt=consent;
 * the code-paste page is Code Assist's authcode page.
 */
export const gemini: ProviderConfig = {
  flow: 'pkce_redirect',
  issuer: 'https://accounts.google.com',
  authorization_endpoint: 'https://accounts.google.com/o/oauth2/v2/auth',
  token_endpoint: 'https://oauth2.googleapis.com/token',
  revocation_endpoint: 'https://oauth2.googleapis.com/revoke',
  client_id: '681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com',
  client_secret: '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',
  token_endpoint_auth_method: 'client_secret_post',
  scopes: [
    'https://www.googleapis.com/auth/cloud-platform',
    'https://www.googleapis.com/auth/userinfo.email',
    'https://www.googleapis.com/auth/userinfo.profile',
  ],
  redirect_uri: 'https://codeassist.google.com/authcode',
  authorization_params: { access_type: 'offline', prompt: 'consent' },
  /** Gateway: the API these tokens are for. */
  api_base: 'https://cloudcode-pa.googleapis.com',
};
