import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import * as oidc from 'openid-client';
import { DEFAULT_LOOPBACK_REDIRECT_URI } from '../../config.js';
import { CredproxyError } from '../../errors.js';
import { safeErrorCode } from '../../oauth/errors.js';
import type { OAuthProvider } from '../../oauth/types.js';
import { authorizationUrl } from './authorization-url.js';
import { cancelledOutcome, flowFailure } from './failure.js';
import { unrenewableWarning } from '../renewal.js';
import { sendPage } from './loopback-page.js';
import { createPkce, sameState } from './pkce.js';
import { BROWSER_POLL_MS, type FlowContext, type FlowOutcome, type RunningFlow } from './types.js';

/** Base for parsing a request target; a target naming another origin is not our callback. */
const PLACEHOLDER_ORIGIN = 'http://loopback.invalid';

/** The callback is one browser request; anything slower is not a browser. */
const CALLBACK_REQUEST_TIMEOUT_MS = 10_000;

function listen(server: Server, host: string, port: number, provider: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const hint = err.code === 'EADDRINUSE' && port !== 0 ? '; another login for it may be in progress' : '';
      reject(new CredproxyError('INTERNAL_ERROR', `cannot listen on ${host}:${port} for the ${provider} login (${err.code ?? 'error'}${hint})`));
    });
    server.listen(port, host, () => resolve((server.address() as { port: number }).port));
  });
}

/**
 * browser_redirect (RFC 8252 loopback): the host listens on the loopback
 * address of the provider's redirect_uri (127.0.0.1 for "localhost"), on its
 * port when the client is registered with a fixed one (Codex), else on an
 * ephemeral port (RFC 8252 §7.3). The browser's redirect lands here; the
 * state is checked, the code exchanged, and the listener closed.
 */
export async function startBrowserRedirect(provider: OAuthProvider, ctx: FlowContext): Promise<RunningFlow> {
  const registered = new URL(provider.settings.redirect_uri ?? DEFAULT_LOOPBACK_REDIRECT_URI);
  const listenHost = registered.hostname === 'localhost' ? '127.0.0.1' : registered.hostname.replace(/^\[(.*)\]$/, '$1');
  const config = await provider.configuration(ctx.signal);
  const pkce = await createPkce();
  const pollMs = ctx.timing?.browserPollMs ?? BROWSER_POLL_MS;
  const retry = `\`credproxy login ${provider.name}\``;

  let settle!: (o: FlowOutcome) => void;
  const outcome = new Promise<FlowOutcome>((resolve) => (settle = resolve));
  let phase: 'waiting' | 'exchanging' | 'done' = 'waiting';
  let redirectUri = '';

  const exchange = async (callback: URL): Promise<FlowOutcome> => {
    try {
      const cfg = await provider.configuration(ctx.stop);
      const response = await oidc.authorizationCodeGrant(cfg, callback, { pkceCodeVerifier: pkce.verifier, expectedState: pkce.state });
      return { ok: true, token: provider.tokenFromResponse(response) };
    } catch (err) {
      return ctx.stop.aborted ? cancelledOutcome() : flowFailure(provider, 'code exchange', err, ctx.stop);
    }
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    // Only the path and query of the request count; the URL handed to the exchange is always our own redirect URI.
    const target = req.url !== undefined && URL.canParse(req.url, PLACEHOLDER_ORIGIN) ? new URL(req.url, PLACEHOLDER_ORIGIN) : null;
    if (req.method !== 'GET' || target === null || target.origin !== PLACEHOLDER_ORIGIN || target.pathname !== registered.pathname) {
      sendPage(res, 404, { title: 'Not found', happened: 'This address is not a credproxy login callback.', next: 'Use the link that `credproxy login` printed in the terminal.' });
      return;
    }
    const callback = new URL(redirectUri);
    callback.search = target.search;
    if (phase !== 'waiting') {
      sendPage(res, 409, { title: 'Login already finished', happened: 'This login was already completed or cancelled.', next: `You can close this tab. To log in again, run ${retry} in the terminal.` });
      return;
    }
    const returned = callback.searchParams.get('state');
    // A forged or stale redirect is refused without ending the login: the real one may still come.
    if (returned === null || !sameState(returned, pkce.state)) {
      sendPage(res, 400, { title: 'Login failed', happened: 'This link does not belong to the login in progress (state mismatch), so it was refused.', next: 'The login in the terminal is still waiting: open the link it printed, in this browser.' });
      return;
    }
    phase = 'exchanging';
    const error = callback.searchParams.get('error');
    if (error !== null) {
      sendPage(res, 400, { title: 'Login failed', happened: `${provider.name} did not grant access, so nothing was stored.`, next: `You can close this tab. To try again, run ${retry} in the terminal.` });
      const shown = error === 'access_denied' ? `the ${provider.name} login was denied` : `the ${provider.name} login failed: ${safeErrorCode(error)}`;
      finish({ ok: false, code: 'EXCHANGE_FAILED', error: shown });
      return;
    }
    void exchange(callback).then((result) => {
      if (result.ok) {
        const warning = unrenewableWarning(result.token);
        sendPage(res, 200, {
          title: 'Logged in',
          happened: `You are logged in to ${provider.name}. credproxy stored the login on this computer; sandboxed programs get only short-lived access tokens, never your password or refresh token.`,
          next: 'You can close this tab and return to the terminal, where the command goes on by itself.',
          ...(warning === undefined ? {} : { note: `Note: ${warning}.` }),
        });
      } else {
        sendPage(res, 400, { title: 'Login failed', happened: `The code exchange with ${provider.name} failed, so nothing was stored.`, next: `You can close this tab. To try again, run ${retry} in the terminal.` });
      }
      finish(result);
    });
  };

  const server = createServer({ requestTimeout: CALLBACK_REQUEST_TIMEOUT_MS, headersTimeout: CALLBACK_REQUEST_TIMEOUT_MS }, onRequest);
  server.maxConnections = 16;
  const close = (): void => {
    server.close();
    server.closeIdleConnections();
  };
  function finish(o: FlowOutcome): void {
    if (phase === 'done') return;
    phase = 'done';
    settle(o);
    close();
  }

  const port = await listen(server, listenHost, registered.port === '' ? 0 : Number(registered.port), provider.name);
  // The listener is not what keeps a process alive: the one waiting for the login is.
  server.unref();
  redirectUri = `${registered.protocol}//${registered.hostname}:${port}${registered.pathname}`;
  const onStop = (): void => {
    finish(cancelledOutcome());
    server.closeAllConnections();
  };
  if (ctx.signal.aborted || ctx.stop.aborted) {
    onStop();
    throw new CredproxyError('INTERNAL_ERROR', 'the login was cancelled while it started');
  }
  ctx.stop.addEventListener('abort', onStop, { once: true });
  void outcome.then(() => ctx.stop.removeEventListener('abort', onStop));

  const url = authorizationUrl(config, provider, redirectUri, pkce);
  return {
    start: { flow_type: 'browser_redirect', auth_url: url.href, pollIntervalMs: pollMs },
    pollIntervalMs: () => pollMs,
    outcome,
  };
}
