import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ProviderConfig } from '../../src/config.js';
import { isProviderError, OpenIdProvider, ProviderError, type FetchLike, type ProviderRuntimeOptions } from '../../src/oauth/index.js';
import type { OAuthToken } from '../../src/store/types.js';
import { ScriptedBrowser } from '../support/browser.js';
import { CONFIDENTIAL_CLIENT_ID, NATIVE_CLIENT_ID, NATIVE_REDIRECT_URI, OidcTestServer } from '../support/oidc-server.js';
import { RecordingServer } from './recording-server.js';

let server: OidcTestServer;
let rec: RecordingServer;

beforeAll(async () => {
  server = await OidcTestServer.start({ accessTokenTtlSeconds: 600 });
  rec = await RecordingServer.start();
});
afterAll(async () => {
  await server.close();
  await rec.close();
});
beforeEach(() => {
  server.tokenDelayMs = 0;
});

function provider(extra: Partial<ProviderConfig> = {}, runtime: ProviderRuntimeOptions = {}): OpenIdProvider {
  return new OpenIdProvider('corp', { flow: 'pkce_redirect', issuer: server.issuer, client_id: NATIVE_CLIENT_ID, ...extra }, runtime);
}

async function freshToken(clientId = NATIVE_CLIENT_ID): Promise<OAuthToken> {
  const set = await server.issueTokens({ clientId });
  return { access_token: set.access_token, expiry: 0, refresh_token: set.refresh_token!, token_type: 'Bearer' };
}

/** The ProviderError a call fails with. */
async function failure(p: Promise<unknown>): Promise<ProviderError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ProviderError) return err;
    throw err;
  }
  throw new Error('call succeeded');
}

describe('refresh against a real authorization server', () => {
  it('discovers endpoints from the issuer and maps the answer to a token', async () => {
    const token = await freshToken();
    const before = server.refreshSuccesses;
    const startedSec = Math.floor(Date.now() / 1000);
    const fresh = await provider().refresh(token);
    expect(server.refreshSuccesses).toBe(before + 1);
    expect(fresh.access_token).not.toBe(token.access_token);
    expect(typeof fresh.refresh_token).toBe('string');
    expect(fresh.refresh_token).not.toBe(token.refresh_token);
    expect(fresh.token_type).toBe('Bearer');
    expect(fresh.expiry).toBeGreaterThanOrEqual(startedSec + 600);
    expect(fresh.expiry).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + 600);
    expect(typeof fresh.id_token).toBe('string');
    expect(fresh.scope).toContain('offline_access');
    expect(fresh).not.toHaveProperty('expires_in');
  });

  it('works with explicit endpoints and no discovery', async () => {
    const token = await freshToken();
    const p = new OpenIdProvider('corp', {
      flow: 'device_code',
      device_authorization_endpoint: server.endpoints.deviceAuthorization,
      token_endpoint: server.endpoints.token,
      client_id: NATIVE_CLIENT_ID,
    });
    const fresh = await p.refresh(token);
    expect(fresh.access_token).not.toBe(token.access_token);
  });

  it('authenticates a confidential client with its secret', async () => {
    const token = await freshToken(CONFIDENTIAL_CLIENT_ID);
    const fresh = await provider({ client_id: CONFIDENTIAL_CLIENT_ID, client_secret: server.confidentialClientSecret }).refresh(token);
    expect(fresh.access_token).not.toBe(token.access_token);
  });

  it('reports a wrong client secret by its error code only, as non-retryable', async () => {
    const token = await freshToken(CONFIDENTIAL_CLIENT_ID);
    const err = await failure(provider({ client_id: CONFIDENTIAL_CLIENT_ID, client_secret: 'wrong-secret' }).refresh(token));
    expect(err.kind).toBe('rejected');
    expect(err.code).toBe('INTERNAL_ERROR');
    expect(err.message).toBe('corp refresh failed: invalid_client');
  });

  it('reports a reused (rotated) refresh token as revoked', async () => {
    const token = await freshToken();
    await provider().refresh(token);
    const err = await failure(provider().refresh(token));
    expect(err.kind).toBe('revoked');
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.oauthError).toBe('invalid_grant');
    expect(err.message).not.toContain(token.refresh_token!);
    expect(JSON.stringify(err)).not.toContain(token.refresh_token!);
  });

  it('reports a token revoked at the revocation endpoint as revoked', async () => {
    const token = await freshToken();
    await server.revoke(token.refresh_token!);
    expect((await failure(provider().refresh(token))).kind).toBe('revoked');
  });

  it('classifies 5xx answers as transient and never shows descriptions', async () => {
    const token = await freshToken();
    server.injectTokenResponses(
      { status: 503, body: '<html>down for maintenance</html>', contentType: 'text/html' },
      { status: 500, body: JSON.stringify({ error: 'server_error', error_description: `leaked ${token.refresh_token}` }) },
    );
    const html = await failure(provider().refresh(token));
    expect([html.kind, html.message]).toEqual(['transient', 'corp refresh failed: provider unavailable (HTTP 503)']);
    const json = await failure(provider().refresh(token));
    expect(json.kind).toBe('transient');
    expect(json.message).not.toContain('leaked');
  });

  it('classifies other 4xx answers and malformed answers as rejected', async () => {
    const token = await freshToken();
    server.injectTokenResponses(
      { status: 400, body: JSON.stringify({ error: 'invalid_scope', error_description: 'secret details' }) },
      { status: 400, body: JSON.stringify({ error: '<img src=x>' }) },
      { status: 200, body: JSON.stringify({ token_type: 'Bearer' }) },
      { status: 404, body: 'not here', contentType: 'text/plain' },
    );
    expect((await failure(provider().refresh(token))).message).toBe('corp refresh failed: invalid_scope');
    expect((await failure(provider().refresh(token))).message).toBe('corp refresh failed: unrecognized_error');
    const malformed = await failure(provider().refresh(token));
    expect([malformed.kind, malformed.message]).toEqual(['rejected', 'corp refresh failed: invalid_response']);
    const notFound = await failure(provider().refresh(token));
    expect([notFound.kind, notFound.message]).toEqual(['rejected', 'corp refresh failed: http_404']);
  });

  it('times out a slow token endpoint', async () => {
    const token = await freshToken();
    const p = provider({}, { timeoutMs: 300 });
    await p.configuration(); // discovery outside the measured call
    server.tokenDelayMs = 1500;
    const started = Date.now();
    const err = await failure(p.refresh(token));
    expect(Date.now() - started).toBeLessThan(1400);
    expect([err.kind, err.message]).toEqual(['transient', 'corp refresh failed: no answer within 300 ms']);
  });

  it('classifies a refused connection as transient', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const p = provider({ issuer: undefined, authorization_endpoint: `http://127.0.0.1:${port}/auth`, token_endpoint: `http://127.0.0.1:${port}/token` });
    const err = await failure(p.refresh({ access_token: 'a', expiry: 0, refresh_token: 'r' }));
    expect([err.kind, err.message]).toEqual(['transient', 'corp refresh failed: network error']);
  });

  it('reports a call cancelled by the caller as aborted', async () => {
    const token = await freshToken();
    const p = provider();
    await p.configuration();
    server.tokenDelayMs = 1000;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const err = await failure(p.refresh(token, controller.signal));
    expect(err.kind).toBe('aborted');
  });

  it('never sends a request to a non-loopback http URL', async () => {
    let calls = 0;
    const counting: FetchLike = (url, init) => {
      calls++;
      return fetch(url, init);
    };
    const token: OAuthToken = { access_token: 'a', expiry: 0, refresh_token: 'r' };
    const plain = new OpenIdProvider('corp', { flow: 'pkce_redirect', authorization_endpoint: 'https://id.invalid/a', token_endpoint: 'http://id.invalid/token', client_id: 'c' }, { fetch: counting });
    expect((await failure(plain.refresh(token))).oauthError).toBe('insecure_endpoint');
    // A loopback URL in the metadata switches the library to allow http; the transport still refuses the rest.
    const mixed = new OpenIdProvider('corp', { flow: 'pkce_redirect', authorization_endpoint: 'http://127.0.0.1:9/a', token_endpoint: 'http://id.invalid/token', client_id: 'c' }, { fetch: counting });
    const err = await failure(mixed.refresh(token));
    expect([err.kind, err.oauthError]).toEqual(['rejected', 'insecure_endpoint']);
    expect(calls).toBe(0);
  });
});

describe('provider quirks on the wire', () => {
  const base = (): ProviderConfig => ({ flow: 'pkce_redirect', authorization_endpoint: `${rec.origin}/authorize`, token_endpoint: `${rec.origin}/v1/oauth/token`, client_id: 'cli' });

  it('sends a JSON body when token_request_format is json, and keeps extra fields', async () => {
    rec.answer({ status: 200, body: JSON.stringify({ access_token: 'a2', token_type: 'Bearer', expires_in: 100, refresh_token: 'r2', account: { uuid: 'u1' } }) });
    const p = new OpenIdProvider('anthropic', { ...base(), token_request_format: 'json' }, { now: () => 1_000_000_000 });
    const token = await p.refresh({ access_token: 'a1', expiry: 0, refresh_token: 'r1' });
    const req = rec.requests.at(-1)!;
    expect(req.contentType).toBe('application/json');
    expect(JSON.parse(req.body)).toEqual({ grant_type: 'refresh_token', refresh_token: 'r1', client_id: 'cli' });
    expect(token).toEqual({ access_token: 'a2', token_type: 'Bearer', expiry: 1_000_000 + 100, refresh_token: 'r2', account: { uuid: 'u1' } });
  });

  it('sends a form by default and falls back to a default lifetime without expires_in', async () => {
    rec.answer({ status: 200, body: JSON.stringify({ access_token: 'a2', token_type: 'bearer', resource_url: 'portal.example' }) });
    const p = new OpenIdProvider('qwen', { ...base(), default_expires_in: 7200 }, { now: () => 2_000_000_000 });
    const token = await p.refresh({ access_token: 'a1', expiry: 0, refresh_token: 'r1' });
    const req = rec.requests.at(-1)!;
    expect(req.contentType).toMatch(/^application\/x-www-form-urlencoded/);
    expect(Object.fromEntries(new URLSearchParams(req.body))).toEqual({ grant_type: 'refresh_token', refresh_token: 'r1', client_id: 'cli' });
    expect(token).toEqual({ access_token: 'a2', token_type: 'Bearer', expiry: 2_000_000 + 7200, resource_url: 'portal.example' });
  });

  it('understands errors sent with HTTP 200 and provider-specific revocation codes', async () => {
    const githubLike = { ...base(), errors_with_status_200: true, revoked_error_codes: ['bad_refresh_token'] };
    const answer = { status: 200, body: JSON.stringify({ error: 'bad_refresh_token', error_description: 'The refresh token passed is incorrect or expired.' }) };
    rec.answer(answer, answer);
    const err = await failure(new OpenIdProvider('github', githubLike).refresh({ access_token: 'a', expiry: 0, refresh_token: 'r' }));
    expect([err.kind, err.message]).toEqual(['revoked', 'github refresh failed: bad_refresh_token']);
    // Without the quirk the same answer is just malformed.
    const plain = await failure(new OpenIdProvider('github', base()).refresh({ access_token: 'a', expiry: 0, refresh_token: 'r' }));
    expect([plain.kind, plain.oauthError]).toEqual(['rejected', 'invalid_response']);
  });

  it('refuses to refresh without a refresh token', async () => {
    await expect(new OpenIdProvider('corp', base()).refresh({ access_token: 'a', expiry: 0 })).rejects.toMatchObject({ code: 'REAUTH_REQUIRED' });
  });
});

describe('login hooks: configuration() with openid-client and the scripted browser', () => {
  const loginProvider = (): OpenIdProvider =>
    new OpenIdProvider('corp', { flow: 'browser_redirect', issuer: server.issuer, client_id: NATIVE_CLIENT_ID, redirect_uri: NATIVE_REDIRECT_URI });

  it('completes an authorization-code + PKCE login on a loopback redirect', async () => {
    const p = loginProvider();
    const config = await p.configuration();
    const verifier = oidc.randomPKCECodeVerifier();
    const state = oidc.randomState();
    const redirectUri = 'http://127.0.0.1:50123/callback';
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid offline_access',
      prompt: 'consent',
      state,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    const landed = await new ScriptedBrowser().authorize(url, redirectUri);
    expect(landed.port).toBe('50123');
    const response = await oidc.authorizationCodeGrant(config, landed, { pkceCodeVerifier: verifier, expectedState: state });
    const token = p.tokenFromResponse(response);
    expect(typeof token.refresh_token).toBe('string');
    expect(token.expiry).toBeGreaterThan(Date.now() / 1000 + 500);
  });

  it('reports a denied authorization as an error redirect', async () => {
    const config = await loginProvider().configuration();
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: NATIVE_REDIRECT_URI,
      scope: 'openid',
      state: 's1',
      code_challenge: await oidc.calculatePKCECodeChallenge(oidc.randomPKCECodeVerifier()),
      code_challenge_method: 'S256',
    });
    const landed = await new ScriptedBrowser().authorize(url, NATIVE_REDIRECT_URI, 'deny');
    expect(landed.searchParams.get('error')).toBe('access_denied');
  });

  it('completes a device-code approval, and reports a denied one', async () => {
    const p = loginProvider();
    const config = await p.configuration();
    const grant = 'urn:ietf:params:oauth:grant-type:device_code';

    const approved = await oidc.initiateDeviceAuthorization(config, { scope: 'openid offline_access' });
    const page = await new ScriptedBrowser().completeDevice(approved.verification_uri, approved.user_code);
    expect(page.html).toContain('Sign-in Success');
    const token = p.tokenFromResponse(await oidc.genericGrantRequest(config, grant, { device_code: approved.device_code }));
    expect(typeof token.refresh_token).toBe('string');

    const denied = await oidc.initiateDeviceAuthorization(config, { scope: 'openid' });
    await new ScriptedBrowser().completeDevice(denied.verification_uri_complete!, undefined, 'deny');
    const err = await oidc.genericGrantRequest(config, grant, { device_code: denied.device_code }).catch((e: unknown) => p.toError('device poll', e));
    expect(isProviderError(err) && [err.kind, err.message]).toEqual(['rejected', 'corp device poll failed: access_denied']);
  });
});
