import type { ProviderConfig } from '../../config.js';

/**
 * Anthropic (Claude Pro/Max), the public client of the Claude Code CLI.
 * Quirks: the token endpoint takes a JSON body rather than a form; the
 * authorization request carries `code=true`, which makes the callback page
 * show the user "<code>#<state>" to paste back.
 */
export const anthropic: ProviderConfig = {
  flow: 'pkce_redirect',
  authorization_endpoint: 'https://claude.ai/oauth/authorize',
  token_endpoint: 'https://console.anthropic.com/v1/oauth/token',
  client_id: '9d1c250a-e61b-44d9-88ed-5944d1962f5e',
  scopes: ['org:create_api_key', 'user:profile', 'user:inference'],
  redirect_uri: 'https://console.anthropic.com/oauth/code/callback',
  authorization_params: { code: 'true' },
  token_request_format: 'json',
  /** Gateway: the API these tokens are for. */
  api_base: 'https://api.anthropic.com',
};
