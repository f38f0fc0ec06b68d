import type { ProviderConfig } from '../../config.js';

/**
 * OpenAI (ChatGPT sign-in), the public client of the Codex CLI.
 * Quirks: the client is registered with the fixed loopback redirect
 * http://localhost:1455/auth/callback, so the listener must use port 1455
 * rather than an ephemeral one; the authorization request adds
 * id_token_add_organizations and codex_cli_simplified_flow. Token answers
 * carry an id_token whose claims hold the ChatGPT account id. Its server
 * issues refresh tokens without prompt=consent and the Codex CLI sends none,
 * so no consent page is forced here (offline_consent: false).
 */
export const codex: ProviderConfig = {
  flow: 'browser_redirect',
  issuer: 'https://auth.openai.com',
  authorization_endpoint: 'https://auth.openai.com/oauth/authorize',
  token_endpoint: 'https://auth.openai.com/oauth/token',
  client_id: 'app_EMoamEEZ73f0CkXaXp7hrann',
  scopes: ['openid', 'profile', 'email', 'offline_access'],
  redirect_uri: 'http://localhost:1455/auth/callback',
  authorization_params: { id_token_add_organizations: 'true', codex_cli_simplified_flow: 'true' },
  offline_consent: false,
  /** Gateway: the API these tokens are for. */
  api_base: 'https://chatgpt.com/backend-api/codex',
};
