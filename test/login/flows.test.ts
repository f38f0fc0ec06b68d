import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ProviderConfig } from '../../src/config.js';
import { CredproxyError } from '../../src/errors.js';
import { parsePastedCode, startFlow, type FlowContext, type FlowOutcome, type RunningFlow } from '../../src/login/flows/index.js';
import { OpenIdProvider } from '../../src/oauth/provider.js';
import { ScriptedBrowser } from '../support/browser.js';
import { NATIVE_CLIENT_ID, NATIVE_REDIRECT_URI, OidcTestServer } from '../support/oidc-server.js';
import { RecordingServer } from '../oauth/recording-server.js';

/**
 * The three flows against real authorization servers on 127.0.0.1: the
 * oidc-provider test server for the happy paths and consent decisions, and a
 * recording server for device-flow answers oidc-provider never gives
 * (slow_down, access_denied, 5xx).
 */
let oidc: OidcTestServer;
let rec: RecordingServer;

beforeAll(async () => {
  oidc = await OidcTestServer.start();
});
afterAll(async () => {
  await oidc.close();
});
// A fresh recording server per test: scripted answers a test leaves unused must not leak into the next.
beforeEach(async () => {
  oidc.tokenDelayMs = 0;
  rec = await RecordingServer.start();
});
afterEach(async () => {
  await rec.close();
});

function oidcProvider(flow: ProviderConfig['flow'], extra: Partial<ProviderConfig> = {}): OpenIdProvider {
  return new OpenIdProvider('corp', {
    flow,
    issuer: oidc.issuer,
    client_id: NATIVE_CLIENT_ID,
    scopes: ['openid', 'offline_access'],
    ...(flow === 'pkce_redirect' ? { redirect_uri: NATIVE_REDIRECT_URI } : {}),
    ...extra,
  });
}

function recordedDeviceProvider(extra: Partial<ProviderConfig> = {}): OpenIdProvider {
  return new OpenIdProvider('corp', {
    flow: 'device_code',
    device_authorization_endpoint: `${rec.origin}/device`,
    token_endpoint: `${rec.origin}/token`,
    client_id: 'device-client',
    ...extra,
  });
}

function flowContext(timing: FlowContext['timing'] = {}) {
  const stop = new AbortController();
  return { ctx: { signal: new AbortController().signal, stop: stop.signal, timing } satisfies FlowContext, stop };
}

const json = (body: object, status = 200) => ({ status, body: JSON.stringify(body) });
const deviceAnswer = (extra: object = {}) => json({ device_code: 'dc-recorded', user_code: 'USER-CODE', verification_uri: 'https://id.example.invalid/device', expires_in: 600, ...extra });
const tokenAnswer = json({ access_token: 'at-recorded', refresh_token: 'rt-recorded', expires_in: 600, token_type: 'Bearer' });
const oauthError = (error: string) => json({ error }, 400);
const tokenPolls = () => rec.requests.filter((r) => r.path === '/token').length;

async function failedOutcome(flow: RunningFlow): Promise<Extract<FlowOutcome, { ok: false }>> {
  const out = await flow.outcome!;
  if (out.ok) throw new Error('expected the flow to fail');
  return out;
}

describe('pkce_redirect (code paste)', () => {
  it('accepts the callback URL, `code#state` and the bare code; the token carries the refresh token', async () => {
    for (const form of ['url', 'hash', 'bare'] as const) {
      const { ctx } = flowContext();
      const flow = await startFlow(oidcProvider('pkce_redirect'), ctx);
      const landed = await new ScriptedBrowser().authorize(flow.start.auth_url!, NATIVE_REDIRECT_URI);
      const code = landed.searchParams.get('code')!;
      const pasted = form === 'url' ? landed.href : form === 'hash' ? `${code}#${landed.searchParams.get('state')}` : ` ${code}\n`;
      const token = await flow.exchange!(pasted, new AbortController().signal);
      expect(token.access_token).toBeTruthy();
      expect(typeof token.refresh_token).toBe('string');
    }
  });

  it('refuses a code from another login (state mismatch) without sending it to the provider', async () => {
    const { ctx } = flowContext();
    const flow = await startFlow(oidcProvider('pkce_redirect'), ctx);
    const landed = await new ScriptedBrowser().authorize(flow.start.auth_url!, NATIVE_REDIRECT_URI);
    const before = oidc.tokenRequests;
    const code = landed.searchParams.get('code')!;
    const err = (await flow.exchange!(`${code}#another-login-state`, new AbortController().signal).catch((e: unknown) => e)) as CredproxyError;
    expect(err).toMatchObject({ code: 'EXCHANGE_FAILED', message: expect.stringContaining('state mismatch') });
    expect(err.message).not.toContain(code);
    expect(oidc.tokenRequests).toBe(before);
  });

  it('a wrong code fails as EXCHANGE_FAILED naming only the OAuth error', async () => {
    const { ctx } = flowContext();
    const flow = await startFlow(oidcProvider('pkce_redirect'), ctx);
    const err = (await flow.exchange!('not-a-real-code-1234', new AbortController().signal).catch((e: unknown) => e)) as CredproxyError;
    expect(err).toMatchObject({ code: 'EXCHANGE_FAILED', message: 'corp code exchange failed: invalid_grant' });
  });

  it('stopping the session aborts an exchange in flight', async () => {
    const { ctx, stop } = flowContext();
    const flow = await startFlow(oidcProvider('pkce_redirect'), ctx);
    const landed = await new ScriptedBrowser().authorize(flow.start.auth_url!, NATIVE_REDIRECT_URI);
    oidc.tokenDelayMs = 2000;
    const started = Date.now();
    const pending = flow.exchange!(landed.href, new AbortController().signal).catch((e: unknown) => e);
    setTimeout(() => stop.abort(), 100);
    expect(await pending).toMatchObject({ code: 'EXCHANGE_FAILED', message: expect.stringContaining('cancelled') });
    expect(Date.now() - started).toBeLessThan(1500);
  });

  it('parses pasted text without echoing it in errors', () => {
    expect(parsePastedCode('abc#def')).toEqual({ code: 'abc', state: 'def' });
    expect(parsePastedCode('https://console.example/cb?code=c1&state=s1')).toEqual({ code: 'c1', state: 's1' });
    expect(parsePastedCode('  c2 \n')).toEqual({ code: 'c2' });
    expect(() => parsePastedCode('https://x.example/cb?error=access_denied&state=s')).toThrow('the provider answered the login with access_denied');
    for (const bad of ['', 'two words', '#only-state', 'https://x.example/cb?state=s']) {
      const err = (() => {
        try {
          parsePastedCode(bad);
        } catch (e) {
          return e as CredproxyError;
        }
        throw new Error(`accepted ${JSON.stringify(bad)}`);
      })();
      expect(err.code).toBe('EXCHANGE_FAILED');
      if (bad.length > 3) expect(err.message).not.toContain(bad);
    }
  });
});

describe('offline_access and prompt=consent (OpenID Connect Core §11)', () => {
  /** Run a code flow to its token with the scripted browser; the authorization URL comes back too. */
  async function codeFlowToken(flowType: 'pkce_redirect' | 'browser_redirect', extra: Partial<ProviderConfig> = {}) {
    const { ctx, stop } = flowContext();
    const flow = await startFlow(oidcProvider(flowType, extra), ctx);
    const auth = new URL(flow.start.auth_url!);
    try {
      if (flowType === 'pkce_redirect') {
        const landed = await new ScriptedBrowser().authorize(auth, NATIVE_REDIRECT_URI);
        return { auth, token: await flow.exchange!(landed.href, new AbortController().signal) };
      }
      const redirect = auth.searchParams.get('redirect_uri')!;
      const landed = await new ScriptedBrowser().authorize(auth, redirect);
      await (await fetch(landed)).body?.cancel();
      const out = await flow.outcome!;
      if (!out.ok) throw new Error(out.error);
      return { auth, token: out.token };
    } finally {
      stop.abort();
    }
  }

  for (const flowType of ['pkce_redirect', 'browser_redirect'] as const) {
    it(`${flowType}: a config without any prompt still gets a refresh token from oidc-provider`, async () => {
      const { auth, token } = await codeFlowToken(flowType);
      expect(auth.searchParams.get('prompt')).toBe('consent');
      expect(typeof token.refresh_token).toBe('string');
    });
  }

  it('offline_consent: false sends no prompt, and this server then drops offline_access (no refresh token)', async () => {
    const { auth, token } = await codeFlowToken('pkce_redirect', { offline_consent: false });
    expect(auth.searchParams.has('prompt')).toBe(false);
    expect(token.refresh_token).toBeUndefined();
    expect(token.access_token).toBeTruthy();
  });

  it('a prompt from the config wins; no offline_access or no OpenID provider means no prompt', async () => {
    const login = (await codeFlowToken('pkce_redirect', { authorization_params: { prompt: 'login consent' } })).auth;
    expect(login.searchParams.get('prompt')).toBe('login consent');
    const { ctx, stop } = flowContext();
    try {
      const online = await startFlow(oidcProvider('pkce_redirect', { scopes: ['openid'] }), ctx);
      expect(new URL(online.start.auth_url!).searchParams.has('prompt')).toBe(false);
      // A plain OAuth server (explicit endpoints, no issuer, no openid scope) is not asked for OpenID consent.
      const plain = await startFlow(new OpenIdProvider('plain', {
        flow: 'pkce_redirect',
        authorization_endpoint: oidc.endpoints.authorization,
        token_endpoint: oidc.endpoints.token,
        client_id: NATIVE_CLIENT_ID,
        scopes: ['offline_access'],
        redirect_uri: NATIVE_REDIRECT_URI,
      }), ctx);
      expect(new URL(plain.start.auth_url!).searchParams.has('prompt')).toBe(false);
    } finally {
      stop.abort();
    }
  });
});

describe('device_code (RFC 8628)', () => {
  it('completes against oidc-provider once the user approves on the device page', async () => {
    const { ctx } = flowContext({ devicePollMs: 200 });
    const flow = await startFlow(oidcProvider('device_code'), ctx);
    expect(flow.start).toMatchObject({ flow_type: 'device_code', verification_url: `${oidc.issuer}/device`, user_code: expect.any(String), pollIntervalMs: 200 });
    await new ScriptedBrowser().completeDevice(flow.start.verification_url!, flow.start.user_code);
    const out = await flow.outcome!;
    expect(out.ok && typeof out.token.refresh_token).toBe('string');
  });

  it('denied consent ends the flow with EXCHANGE_FAILED', async () => {
    const { ctx } = flowContext({ devicePollMs: 200 });
    const flow = await startFlow(oidcProvider('device_code'), ctx);
    await new ScriptedBrowser().completeDevice(flow.start.verification_url!, flow.start.user_code, 'deny');
    expect(await failedOutcome(flow)).toEqual({ ok: false, code: 'EXCHANGE_FAILED', error: 'the corp login was denied' });
  });

  it('keeps polling while pending, adds the slow_down step to the interval, and reports it', async () => {
    rec.answer(deviceAnswer(), oauthError('authorization_pending'), oauthError('slow_down'), oauthError('authorization_pending'), tokenAnswer);
    const { ctx } = flowContext({ devicePollMs: 100, slowDownStepMs: 250 });
    const times: number[] = [];
    const flow = await startFlow(recordedDeviceProvider(), ctx);
    expect(flow.pollIntervalMs()).toBe(100);
    const watcher = setInterval(() => times.length < tokenPolls() && times.push(Date.now()), 5);
    const out = await flow.outcome!;
    clearInterval(watcher);
    expect(out).toMatchObject({ ok: true, token: { access_token: 'at-recorded', refresh_token: 'rt-recorded' } });
    expect(tokenPolls()).toBe(4);
    expect(flow.pollIntervalMs()).toBe(350);
    // After slow_down (2nd poll) the gap grows from ~100 ms to ~350 ms.
    expect(times[1]! - times[0]!).toBeLessThan(300);
    expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(330);
    const poll = new URLSearchParams(rec.requests[1]!.body);
    expect(Object.fromEntries(poll)).toEqual({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'dc-recorded', client_id: 'device-client' });
  });

  it('maps expired_token to SESSION_EXPIRED and access_denied to EXCHANGE_FAILED', async () => {
    rec.answer(deviceAnswer(), oauthError('expired_token'));
    const a = await startFlow(recordedDeviceProvider(), flowContext({ devicePollMs: 50 }).ctx);
    expect(await failedOutcome(a)).toEqual({ ok: false, code: 'SESSION_EXPIRED', error: 'the corp device code expired; start the login again' });
    rec.answer(deviceAnswer(), oauthError('access_denied'));
    const b = await startFlow(recordedDeviceProvider(), flowContext({ devicePollMs: 50 }).ctx);
    expect(await failedOutcome(b)).toEqual({ ok: false, code: 'EXCHANGE_FAILED', error: 'the corp login was denied' });
    rec.answer(deviceAnswer(), oauthError('invalid_client'));
    const c = await startFlow(recordedDeviceProvider(), flowContext({ devicePollMs: 50 }).ctx);
    expect(await failedOutcome(c)).toEqual({ ok: false, code: 'EXCHANGE_FAILED', error: 'corp device poll failed: invalid_client' });
  });

  it('stops at the device code\'s own expiry without asking the provider again', async () => {
    rec.answer(deviceAnswer({ expires_in: 1 }), oauthError('authorization_pending'), oauthError('authorization_pending'));
    const flow = await startFlow(recordedDeviceProvider(), flowContext({ devicePollMs: 600 }).ctx);
    const started = Date.now();
    expect(await failedOutcome(flow)).toMatchObject({ code: 'SESSION_EXPIRED' });
    expect(Date.now() - started).toBeLessThan(1500);
    expect(tokenPolls()).toBe(1);
  });

  it('backs off after a provider failure instead of giving up (5xx), then completes', async () => {
    rec.answer(deviceAnswer(), json({ error: 'server_error' }, 503), tokenAnswer);
    const { ctx } = flowContext({ devicePollMs: 100 });
    const flow = await startFlow(recordedDeviceProvider(), ctx);
    const out = await flow.outcome!;
    expect(out.ok).toBe(true);
    expect(flow.pollIntervalMs()).toBe(200);
  });

  it('stop ends the polling at once: no token request afterwards', async () => {
    rec.answer(deviceAnswer(), ...Array.from({ length: 20 }, () => oauthError('authorization_pending')));
    const { ctx, stop } = flowContext({ devicePollMs: 100 });
    const flow = await startFlow(recordedDeviceProvider(), ctx);
    await new Promise((r) => setTimeout(r, 350));
    expect(tokenPolls()).toBeGreaterThanOrEqual(2);
    stop.abort();
    expect(await failedOutcome(flow)).toMatchObject({ code: 'SESSION_NOT_FOUND' });
    // A poll sent just before the abort may still be on its way to the recorder.
    await new Promise((r) => setTimeout(r, 100));
    const polled = tokenPolls();
    await new Promise((r) => setTimeout(r, 400));
    expect(tokenPolls()).toBe(polled);
  });

  it('sends the PKCE challenge with the device request and the verifier with each poll when the provider uses PKCE', async () => {
    rec.answer(deviceAnswer(), tokenAnswer);
    const flow = await startFlow(recordedDeviceProvider({ use_pkce: true }), flowContext({ devicePollMs: 50 }).ctx);
    await flow.outcome;
    const device = Object.fromEntries(new URLSearchParams(rec.requests[0]!.body));
    const poll = Object.fromEntries(new URLSearchParams(rec.requests[1]!.body));
    expect(device).toMatchObject({ code_challenge_method: 'S256', code_challenge: expect.stringMatching(/^[\w-]{43}$/) });
    const { createHash } = await import('node:crypto');
    expect(createHash('sha256').update(poll.code_verifier!).digest('base64url')).toBe(device.code_challenge);
  });

  it('a failed device authorization is an INTERNAL_ERROR naming the provider\'s error code only', async () => {
    rec.answer(json({ error: 'invalid_client', error_description: 'secret-ish detail' }, 401));
    const err = (await startFlow(recordedDeviceProvider(), flowContext().ctx).catch((e: unknown) => e)) as CredproxyError;
    expect(err).toMatchObject({ code: 'INTERNAL_ERROR', message: 'corp device authorization failed: invalid_client' });
  });
});

/** Send one request with an arbitrary request target (fetch would normalize it) and return the status. */
function rawStatus(base: string, target: string): Promise<number> {
  const { port } = new URL(base);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), '127.0.0.1', () => sock.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    let text = '';
    sock.on('data', (d: Buffer) => (text += d.toString()));
    sock.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)));
    sock.on('error', reject);
  });
}

describe('browser_redirect (RFC 8252 loopback)', () => {
  async function refused(url: string): Promise<boolean> {
    return fetch(url).then(
      async (r) => {
        await r.body?.cancel();
        return false;
      },
      () => true,
    );
  }

  it('listens on 127.0.0.1 (ephemeral port), refuses other paths and a wrong state, completes with the real redirect, then closes', async () => {
    const { ctx } = flowContext();
    const flow = await startFlow(oidcProvider('browser_redirect'), ctx);
    const auth = new URL(flow.start.auth_url!);
    const redirect = auth.searchParams.get('redirect_uri')!;
    expect(redirect).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    expect(flow.start).toMatchObject({ flow_type: 'browser_redirect', pollIntervalMs: 2000 });
    const origin = new URL(redirect).origin;

    const other = await fetch(`${origin}/favicon.ico`);
    expect(other.status).toBe(404);
    const forged = await fetch(`${redirect}?code=forged&state=not-the-state`);
    expect(forged.status).toBe(400);
    expect(await forged.text()).toContain('state mismatch');

    // A request target naming another origin is not the callback, even with the right state; junk does not crash it.
    const state = auth.searchParams.get('state')!;
    expect(await rawStatus(redirect, `http://evil.example/callback?code=c&state=${state}`)).toBe(404);
    expect(await rawStatus(redirect, '/callback?%zz=%&state')).toBe(400);

    const landed = await new ScriptedBrowser().authorize(auth, redirect);
    const page = await fetch(landed);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('Logged in');
    expect(html).not.toContain(landed.searchParams.get('code')!);
    const out = await flow.outcome!;
    expect(out.ok && typeof out.token.refresh_token).toBe('string');
    expect(await refused(redirect)).toBe(true);
  });

  it('denied consent: the redirect carries access_denied, the login fails, the listener closes', async () => {
    const { ctx } = flowContext();
    const flow = await startFlow(oidcProvider('browser_redirect'), ctx);
    const auth = new URL(flow.start.auth_url!);
    const redirect = auth.searchParams.get('redirect_uri')!;
    const landed = await new ScriptedBrowser().authorize(auth, redirect, 'deny');
    expect(landed.searchParams.get('error')).toBe('access_denied');
    const page = await fetch(landed);
    expect(page.status).toBe(400);
    await page.text();
    expect(await failedOutcome(flow)).toEqual({ ok: false, code: 'EXCHANGE_FAILED', error: 'the corp login was denied' });
    expect(await refused(redirect)).toBe(true);
  });

  it('stop closes the listener at once', async () => {
    const { ctx, stop } = flowContext();
    const flow = await startFlow(oidcProvider('browser_redirect'), ctx);
    const redirect = new URL(flow.start.auth_url!).searchParams.get('redirect_uri')!;
    expect(await refused(redirect)).toBe(false);
    stop.abort();
    expect(await failedOutcome(flow)).toMatchObject({ code: 'SESSION_NOT_FOUND' });
    expect(await refused(redirect)).toBe(true);
  });

  it('takes the host and path from the registered redirect: "localhost" is served on 127.0.0.1', async () => {
    const { ctx, stop } = flowContext();
    const flow = await startFlow(oidcProvider('browser_redirect', { redirect_uri: 'http://localhost/oauth/done' }), ctx);
    const redirect = new URL(new URL(flow.start.auth_url!).searchParams.get('redirect_uri')!);
    expect(redirect.hostname).toBe('localhost');
    expect(redirect.pathname).toBe('/oauth/done');
    const res = await fetch(`http://127.0.0.1:${redirect.port}/oauth/done?state=wrong&code=x`);
    expect(res.status).toBe(400);
    await res.text();
    stop.abort();
    await flow.outcome;
  });

  it('a fixed port that is taken fails the start with a clear error', async () => {
    const { ctx, stop } = flowContext();
    const first = await startFlow(oidcProvider('browser_redirect'), ctx);
    const port = new URL(new URL(first.start.auth_url!).searchParams.get('redirect_uri')!).port;
    const err = (await startFlow(oidcProvider('browser_redirect', { redirect_uri: `http://127.0.0.1:${port}/callback` }), flowContext().ctx).catch((e: unknown) => e)) as CredproxyError;
    expect(err).toMatchObject({ code: 'INTERNAL_ERROR', message: `cannot listen on 127.0.0.1:${port} for the corp login (EADDRINUSE; another login for it may be in progress)` });
    stop.abort();
    await first.outcome;
  });
});
