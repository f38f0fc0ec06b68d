import * as oidc from 'openid-client';
import { DEFAULT_LOOPBACK_REDIRECT_URI } from '../../config.js';
import { CredproxyError } from '../../errors.js';
import type { OAuthProvider } from '../../oauth/types.js';
import { authorizationUrl } from './authorization-url.js';
import { exchangeError } from './failure.js';
import { parsePastedCode } from './pasted-code.js';
import { createPkce, sameState } from './pkce.js';
import type { FlowContext, RunningFlow } from './types.js';

/**
 * pkce_redirect (code paste): the host answers the authorization URL; the
 * provider's page shows the user a code, which comes back through
 * oauth_exchange and is exchanged here with the verifier.
 */
export async function startPkceRedirect(provider: OAuthProvider, ctx: FlowContext): Promise<RunningFlow> {
  const redirectUri = provider.settings.redirect_uri ?? DEFAULT_LOOPBACK_REDIRECT_URI;
  const config = await provider.configuration(ctx.signal);
  const pkce = await createPkce();
  const url = authorizationUrl(config, provider, redirectUri, pkce);
  return {
    start: { flow_type: 'pkce_redirect', auth_url: url.href },
    pollIntervalMs: () => 0,
    async exchange(pasted, signal) {
      const { code, state } = parsePastedCode(pasted);
      // Checked before any network call: a code from another login never reaches the provider.
      if (state !== undefined && !sameState(state, pkce.state)) {
        throw new CredproxyError('EXCHANGE_FAILED', 'the pasted code belongs to another login (state mismatch); start the login again');
      }
      const both = AbortSignal.any([signal, ctx.stop]);
      try {
        const cfg = await provider.configuration(both);
        // The pasted code arrives without the redirect's other parameters; rebuild them,
        // including the RFC 9207 `iss` that a server advertising it is expected to send.
        const meta = cfg.serverMetadata();
        const callback = new URL(redirectUri);
        callback.search = new URLSearchParams({ code, state: pkce.state, ...(meta.authorization_response_iss_parameter_supported ? { iss: meta.issuer } : {}) }).toString();
        // A provider that hands the state to the user with the code (Anthropic's `code#state`)
        // expects it back in the token request; RFC 6749 §3.2 has other servers ignore it.
        const extra = state !== undefined ? { state } : undefined;
        const response = await oidc.authorizationCodeGrant(cfg, callback, { pkceCodeVerifier: pkce.verifier, expectedState: pkce.state }, extra);
        return provider.tokenFromResponse(response);
      } catch (err) {
        throw exchangeError(provider, err, both);
      }
    },
  };
}
