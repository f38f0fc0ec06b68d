import type { ProviderConfig } from '../../config.js';

/**
 * Qwen (chat.qwen.ai), the public client of the Qwen Code CLI.
 * Quirks: the device authorization request carries a PKCE challenge and the
 * device-code exchange the verifier; token answers include `resource_url`
 * (the API base to use), kept as an extra token field.
 */
export const qwen: ProviderConfig = {
  flow: 'device_code',
  device_authorization_endpoint: 'https://chat.qwen.ai/api/v1/oauth2/device/code',
  token_endpoint: 'https://chat.qwen.ai/api/v1/oauth2/token',
  client_id: 'f0304373b74a44d2b584a3fb70ca9e56',
  scopes: ['openid', 'profile', 'email', 'model.completion'],
  use_pkce: true,
};
