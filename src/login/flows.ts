import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import * as oidc from 'openid-client';
import { DEFAULT_LOOPBACK_REDIRECT_URI, type Flow } from '../config.js';
import { CredproxyError, type WireErrorCode } from '../errors.js';
import { isProviderError } from '../oauth/errors.js';
import type { OAuthProvider } from '../oauth/types.js';
import type { OAuthToken } from '../store/types.js';

/** SPEC §5 poll intervals. */
export const DEVICE_POLL_MS = 5000;
export const BROWSER_POLL_MS = 2000;

/** What the user is shown; never a verifier, state, device code or auth code. */
export interface FlowStart {
  flow_type: Flow;
  auth_url?: string;
  verification_url?: string;
  user_code?: string;
  pollIntervalMs?: number;
}

export type FlowOutcome = { ok: true; token: OAuthToken } | { ok: false; code: WireErrorCode; error: string };

/**
 * One running login. Secrets (verifier, state, device code, auth code) live
 * only in this object's closures, inside the host process.
 */
export interface RunningFlow {
  start: FlowStart;
  /** pkce_redirect: exchange the code the user pasted. */
  exchange?(pasted: string, signal: AbortSignal): Promise<OAuthToken>;
  /** device_code / browser_redirect: settles when the host-side flow ends. */
  outcome?: Promise<FlowOutcome>;
  /** Stop background polling / close the loopback listener. */
  cancel(): void;
}

function scopeOf(provider: OAuthProvider): Record<string, string> {
  const scopes = provider.settings.scopes;
  return scopes && scopes.length > 0 ? { scope: scopes.join(' ') } : {};
}

function failure(provider: OAuthProvider, action: string, err: unknown, signal?: AbortSignal): FlowOutcome {
  const e = isProviderError(err) || err instanceof CredproxyError ? err : provider.toError(action, err, signal);
  const oauthError = isProviderError(e) ? e.oauthError : undefined;
  if (oauthError === 'expired_token') return { ok: false, code: 'SESSION_EXPIRED', error: `the ${provider.name} device code expired; start the login again` };
  if (oauthError === 'access_denied') return { ok: false, code: 'EXCHANGE_FAILED', error: `the ${provider.name} login was denied` };
  return { ok: false, code: 'EXCHANGE_FAILED', error: e.message };
}

async function pkceParams(): Promise<{ verifier: string; state: string; params: Record<string, string> }> {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  return { verifier, state, params: { state, code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256' } };
}

/** pkce_redirect: answer the URL; the user pastes the code (or `code#state`) shown by the provider. */
async function startPkceRedirect(provider: OAuthProvider, signal: AbortSignal): Promise<RunningFlow> {
  const redirectUri = provider.settings.redirect_uri ?? DEFAULT_LOOPBACK_REDIRECT_URI;
  const config = await provider.configuration(signal);
  const { verifier, state, params } = await pkceParams();
  const url = oidc.buildAuthorizationUrl(config, { ...provider.settings.authorization_params, ...scopeOf(provider), redirect_uri: redirectUri, ...params });
  return {
    start: { flow_type: 'pkce_redirect', auth_url: url.href },
    async exchange(pasted, exchangeSignal) {
      const [code, pastedState] = pasted.trim().split('#', 2);
      if (!code) throw new CredproxyError('EXCHANGE_FAILED', 'the pasted code is empty');
      if (pastedState !== undefined && pastedState !== state) throw new CredproxyError('EXCHANGE_FAILED', 'the pasted code belongs to another login (state mismatch)');
      try {
        const cfg = await provider.configuration(exchangeSignal);
        // The pasted code arrives without the redirect's other parameters; rebuild them,
        // including the RFC 9207 `iss` a server that advertises it is expected to send.
        const meta = cfg.serverMetadata();
        const callback = new URL(redirectUri);
        callback.search = new URLSearchParams({ code, state, ...(meta.authorization_response_iss_parameter_supported ? { iss: meta.issuer } : {}) }).toString();
        return provider.tokenFromResponse(await oidc.authorizationCodeGrant(cfg, callback, { pkceCodeVerifier: verifier, expectedState: state }));
      } catch (err) {
        const out = failure(provider, 'code exchange', err, exchangeSignal);
        throw new CredproxyError(out.ok ? 'EXCHANGE_FAILED' : out.code, out.ok ? 'exchange failed' : out.error);
      }
    },
    cancel() {},
  };
}

/** device_code (RFC 8628): poll in the background, honouring slow_down; PKCE when the provider uses it. */
async function startDeviceCode(provider: OAuthProvider, signal: AbortSignal): Promise<RunningFlow> {
  const config = await provider.configuration(signal);
  const pkce = provider.settings.use_pkce ? await pkceParams() : null;
  const params: Record<string, string> = { ...scopeOf(provider) };
  if (pkce) {
    params.code_challenge = pkce.params.code_challenge!;
    params.code_challenge_method = 'S256';
  }
  let device: oidc.DeviceAuthorizationResponse;
  try {
    device = await oidc.initiateDeviceAuthorization(config, params);
  } catch (err) {
    throw provider.toError('device authorization', err, signal);
  }
  const stop = new AbortController();
  const outcome = (async (): Promise<FlowOutcome> => {
    try {
      const pollConfig = await provider.configuration(stop.signal);
      const response = await oidc.pollDeviceAuthorizationGrant(pollConfig, device, pkce ? { code_verifier: pkce.verifier } : {}, { signal: stop.signal });
      return { ok: true, token: provider.tokenFromResponse(response) };
    } catch (err) {
      if (stop.signal.aborted) return { ok: false, code: 'SESSION_NOT_FOUND', error: 'the login was cancelled' };
      return failure(provider, 'device poll', err);
    }
  })();
  return {
    start: {
      flow_type: 'device_code',
      verification_url: device.verification_uri_complete ?? device.verification_uri,
      user_code: device.user_code,
      pollIntervalMs: typeof device.interval === 'number' ? device.interval * 1000 : DEVICE_POLL_MS,
    },
    outcome,
    cancel: () => stop.abort(),
  };
}

function page(res: ServerResponse, status: number, title: string, text: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><meta charset="utf-8"><title>${title}</title><body style="font-family:sans-serif;margin:3em"><h1>${title}</h1><p>${text}</p></body>`);
}

/** browser_redirect (RFC 8252): a loopback listener on 127.0.0.1 receives the redirect, checks state, exchanges. */
async function startBrowserRedirect(provider: OAuthProvider, signal: AbortSignal): Promise<RunningFlow> {
  const registered = new URL(provider.settings.redirect_uri ?? DEFAULT_LOOPBACK_REDIRECT_URI);
  const config = await provider.configuration(signal);
  const { verifier, state, params } = await pkceParams();
  let settle!: (o: FlowOutcome) => void;
  const outcome = new Promise<FlowOutcome>((resolve) => (settle = resolve));
  let done = false;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', `http://${registered.hostname}:${port}`);
    if (url.pathname !== registered.pathname || done) return page(res, 404, 'Not found', 'This is not a credproxy login callback.');
    if (url.searchParams.get('state') !== state) return page(res, 400, 'Login failed', 'This link does not belong to the login in progress (state mismatch).');
    done = true;
    const error = url.searchParams.get('error');
    if (error) {
      page(res, 400, 'Login failed', 'The provider did not grant access. You can close this tab.');
      settle({ ok: false, code: 'EXCHANGE_FAILED', error: error === 'access_denied' ? `the ${provider.name} login was denied` : `the ${provider.name} login failed` });
      close();
      return;
    }
    void (async () => {
      try {
        const cfg = await provider.configuration();
        const token = provider.tokenFromResponse(await oidc.authorizationCodeGrant(cfg, url, { pkceCodeVerifier: verifier, expectedState: state }));
        page(res, 200, 'Logged in', 'credproxy has your login. You can close this tab.');
        settle({ ok: true, token });
      } catch (err) {
        page(res, 400, 'Login failed', 'The code exchange failed. Start the login again.');
        settle(failure(provider, 'code exchange', err));
      } finally {
        close();
      }
    })();
  });
  const close = (): void => {
    server.close();
    server.closeAllConnections();
  };
  const wantedPort = registered.port === '' ? 0 : Number(registered.port);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new CredproxyError('INTERNAL_ERROR', `cannot listen on 127.0.0.1:${wantedPort} for the ${provider.name} login (${err.code ?? 'error'})`)),
    );
    server.listen(wantedPort, '127.0.0.1', () => resolve());
  });
  server.unref();
  const port = (server.address() as { port: number }).port;
  const redirectUri = `${registered.protocol}//${registered.hostname}:${port}${registered.pathname}`;
  const url = oidc.buildAuthorizationUrl(config, { ...provider.settings.authorization_params, ...scopeOf(provider), redirect_uri: redirectUri, ...params });
  return {
    start: { flow_type: 'browser_redirect', auth_url: url.href, pollIntervalMs: BROWSER_POLL_MS },
    outcome,
    cancel() {
      if (!done) settle({ ok: false, code: 'SESSION_NOT_FOUND', error: 'the login was cancelled' });
      done = true;
      close();
    },
  };
}

export function startFlow(provider: OAuthProvider, signal: AbortSignal): Promise<RunningFlow> {
  switch (provider.flow) {
    case 'pkce_redirect':
      return startPkceRedirect(provider, signal);
    case 'device_code':
      return startDeviceCode(provider, signal);
    case 'browser_redirect':
      return startBrowserRedirect(provider, signal);
  }
}
