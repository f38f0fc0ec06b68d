import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { startFlow, type RunningFlow } from '../../src/login/flows/index.js';
import { ProviderRegistry } from '../../src/oauth/registry.js';

/**
 * The presets' real endpoints are not reachable here and must never be
 * contacted from tests: every provider request goes to a recording fetch
 * that answers like the provider would. The requests are compared with the
 * documented shapes of each provider's login (fixtures below): endpoints,
 * client ids, scopes, PKCE method, redirect URIs, grant parameters.
 */
interface Recorded {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string;
}

type Answer = (req: Recorded) => { status: number; body: object };

function json(status: number, body: object): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });
}

function recordingRegistry(answer: Answer) {
  const requests: Recorded[] = [];
  const registry = new ProviderRegistry({
    runtime: {
      fetch: async (url, init) => {
        const headers: Record<string, string> = {};
        new Headers(init.headers as ConstructorParameters<typeof Headers>[0]).forEach((v, k) => (headers[k] = v));
        const body = typeof init.body === 'string' ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : '';
        const req = { url, method: String(init.method ?? 'GET'), headers, body };
        requests.push(req);
        const a = answer(req);
        return json(a.status, a.body);
      },
    },
  });
  return { registry, requests };
}

const tokenAnswer = { access_token: 'at-fixture', refresh_token: 'rt-fixture', expires_in: 3600, token_type: 'bearer' };
const deviceAnswer = { device_code: 'dc-fixture', user_code: 'ABCD-EFGH', verification_uri: 'https://example.invalid/device', expires_in: 900, interval: 1 };

function ctx() {
  const stop = new AbortController();
  return { flowCtx: { signal: new AbortController().signal, stop: stop.signal }, stop };
}

function params(url: string | URL): Record<string, string> {
  return Object.fromEntries(new URL(url).searchParams);
}

function form(body: string): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body));
}

function s256(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

const PKCE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

async function outcomeOf(flow: RunningFlow) {
  const out = await flow.outcome!;
  if (!out.ok) throw new Error(`flow failed: ${out.code} ${out.error}`);
  return out.token;
}

describe('preset login requests (recorded, no network)', () => {
  it('anthropic: code paste at claude.ai with code=true; the `code#state` paste is exchanged as JSON with the state', async () => {
    const { registry, requests } = recordingRegistry(() => ({ status: 200, body: tokenAnswer }));
    const { flowCtx } = ctx();
    const flow = await startFlow(registry.get('anthropic'), flowCtx);
    expect(requests).toEqual([]); // building the URL needs no network
    const url = new URL(flow.start.auth_url!);
    expect(`${url.origin}${url.pathname}`).toBe('https://claude.ai/oauth/authorize');
    const p = params(url);
    expect(Object.keys(p).sort()).toEqual(['client_id', 'code', 'code_challenge', 'code_challenge_method', 'redirect_uri', 'response_type', 'scope', 'state']);
    expect(p).toMatchObject({
      code: 'true',
      client_id: '9d1c250a-e61b-44d9-88ed-5944d1962f5e',
      response_type: 'code',
      redirect_uri: 'https://console.anthropic.com/oauth/code/callback',
      scope: 'org:create_api_key user:profile user:inference',
      code_challenge_method: 'S256',
    });
    expect(p.code_challenge).toMatch(PKCE_CHALLENGE);
    expect(flow.start).toEqual({ flow_type: 'pkce_redirect', auth_url: url.href });

    const token = await flow.exchange!(`the-auth-code#${p.state}`, new AbortController().signal);
    expect(requests).toHaveLength(1);
    const req = requests[0]!;
    expect(req.url).toBe('https://console.anthropic.com/v1/oauth/token');
    expect(req.method).toBe('POST');
    expect(req.headers['content-type']).toBe('application/json');
    const body = JSON.parse(req.body) as Record<string, string>;
    expect(Object.keys(body).sort()).toEqual(['client_id', 'code', 'code_verifier', 'grant_type', 'redirect_uri', 'state']);
    expect(body).toMatchObject({
      grant_type: 'authorization_code',
      code: 'the-auth-code',
      state: p.state,
      client_id: '9d1c250a-e61b-44d9-88ed-5944d1962f5e',
      redirect_uri: 'https://console.anthropic.com/oauth/code/callback',
    });
    expect(s256(body.code_verifier!)).toBe(p.code_challenge);
    expect(token).toMatchObject({ access_token: 'at-fixture', refresh_token: 'rt-fixture', token_type: 'Bearer' });
  });

  it('gemini: Google consent with offline access, the Code Assist page, and a client_secret_post exchange', async () => {
    const { registry, requests } = recordingRegistry(() => ({ status: 200, body: tokenAnswer }));
    const flow = await startFlow(registry.get('gemini'), ctx().flowCtx);
    expect(requests).toEqual([]);
    const url = new URL(flow.start.auth_url!);
    expect(`${url.origin}${url.pathname}`).toBe('https://accounts.google.com/o/oauth2/v2/auth');
    const p = params(url);
    expect(Object.keys(p).sort()).toEqual(['access_type', 'client_id', 'code_challenge', 'code_challenge_method', 'prompt', 'redirect_uri', 'response_type', 'scope', 'state']);
    expect(p).toMatchObject({
      client_id: '681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com',
      redirect_uri: 'https://codeassist.google.com/authcode',
      access_type: 'offline',
      prompt: 'consent',
      code_challenge_method: 'S256',
      response_type: 'code',
      scope: 'https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile',
    });

    await flow.exchange!('4/0Abc-google-code', new AbortController().signal);
    const req = requests[0]!;
    expect(req.url).toBe('https://oauth2.googleapis.com/token');
    expect(req.headers['content-type']).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    const body = form(req.body);
    expect(Object.keys(body).sort()).toEqual(['client_id', 'client_secret', 'code', 'code_verifier', 'grant_type', 'redirect_uri']);
    expect(body).toMatchObject({
      grant_type: 'authorization_code',
      code: '4/0Abc-google-code',
      redirect_uri: 'https://codeassist.google.com/authcode',
      client_id: '681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com',
      client_secret: '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',
    });
    expect(s256(body.code_verifier!)).toBe(p.code_challenge);
  });

  it('codex: loopback listener on the registered localhost:1455, simplified-flow parameters, form exchange', async () => {
    const { registry, requests } = recordingRegistry(() => ({ status: 200, body: tokenAnswer }));
    const { flowCtx, stop } = ctx();
    const flow = await startFlow(registry.get('codex'), flowCtx).catch((e: Error) => e);
    if (flow instanceof Error) throw new Error(`codex needs 127.0.0.1:1455 free for its registered redirect: ${flow.message}`);
    try {
      const url = new URL(flow.start.auth_url!);
      expect(`${url.origin}${url.pathname}`).toBe('https://auth.openai.com/oauth/authorize');
      const p = params(url);
      expect(Object.keys(p).sort()).toEqual(['client_id', 'code_challenge', 'code_challenge_method', 'codex_cli_simplified_flow', 'id_token_add_organizations', 'redirect_uri', 'response_type', 'scope', 'state']);
      expect(p).toMatchObject({
        client_id: 'app_EMoamEEZ73f0CkXaXp7hrann',
        redirect_uri: 'http://localhost:1455/auth/callback',
        scope: 'openid profile email offline_access',
        id_token_add_organizations: 'true',
        codex_cli_simplified_flow: 'true',
        code_challenge_method: 'S256',
        response_type: 'code',
      });
      expect(flow.start).toMatchObject({ flow_type: 'browser_redirect', pollIntervalMs: 2000 });
      expect(requests).toEqual([]);

      // The browser's redirect (to localhost:1455, which is this listener on 127.0.0.1).
      const page = await fetch(`http://127.0.0.1:1455/auth/callback?code=codex-code&state=${p.state}`);
      expect(page.status).toBe(200);
      await page.text();
      await outcomeOf(flow);
      const req = requests[0]!;
      expect(req.url).toBe('https://auth.openai.com/oauth/token');
      const body = form(req.body);
      expect(Object.keys(body).sort()).toEqual(['client_id', 'code', 'code_verifier', 'grant_type', 'redirect_uri']);
      expect(body).toMatchObject({ grant_type: 'authorization_code', code: 'codex-code', redirect_uri: 'http://localhost:1455/auth/callback', client_id: 'app_EMoamEEZ73f0CkXaXp7hrann' });
      expect(s256(body.code_verifier!)).toBe(p.code_challenge);
    } finally {
      stop.abort();
    }
  });

  it('qwen: device authorization with a PKCE challenge, polled with the device grant and the verifier', async () => {
    const { registry, requests } = recordingRegistry((req) =>
      req.url.endsWith('/device/code') ? { status: 200, body: deviceAnswer } : { status: 200, body: { ...tokenAnswer, resource_url: 'portal.qwen.ai' } },
    );
    const flow = await startFlow(registry.get('qwen'), ctx().flowCtx);
    expect(flow.start).toEqual({ flow_type: 'device_code', verification_url: 'https://example.invalid/device', user_code: 'ABCD-EFGH', pollIntervalMs: 1000 });
    const device = requests[0]!;
    expect(device.url).toBe('https://chat.qwen.ai/api/v1/oauth2/device/code');
    expect(device.method).toBe('POST');
    const dbody = form(device.body);
    expect(Object.keys(dbody).sort()).toEqual(['client_id', 'code_challenge', 'code_challenge_method', 'scope']);
    expect(dbody).toMatchObject({ client_id: 'f0304373b74a44d2b584a3fb70ca9e56', scope: 'openid profile email model.completion', code_challenge_method: 'S256' });

    const token = await outcomeOf(flow);
    expect(token.resource_url).toBe('portal.qwen.ai');
    const poll = requests[1]!;
    expect(poll.url).toBe('https://chat.qwen.ai/api/v1/oauth2/token');
    const pbody = form(poll.body);
    expect(Object.keys(pbody).sort()).toEqual(['client_id', 'code_verifier', 'device_code', 'grant_type']);
    expect(pbody).toMatchObject({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'dc-fixture', client_id: 'f0304373b74a44d2b584a3fb70ca9e56' });
    expect(s256(pbody.code_verifier!)).toBe(dbody.code_challenge);
  });

  it('github: device authorization for the gh client, no PKCE; "pending" arrives with HTTP 200 and is understood', async () => {
    let polls = 0;
    const { registry, requests } = recordingRegistry((req) => {
      if (req.url.endsWith('/login/device/code')) return { status: 200, body: deviceAnswer };
      polls++;
      return polls === 1 ? { status: 200, body: { error: 'authorization_pending' } } : { status: 200, body: { access_token: 'gho_fixture', token_type: 'bearer', scope: 'repo,read:org,gist' } };
    });
    const flow = await startFlow(registry.get('github'), ctx().flowCtx);
    const device = requests[0]!;
    expect(device.url).toBe('https://github.com/login/device/code');
    expect(device.headers.accept).toContain('application/json');
    const dbody = form(device.body);
    expect(Object.keys(dbody).sort()).toEqual(['client_id', 'scope']);
    expect(dbody).toEqual({ client_id: '178c6fc778ccc68e1d6a', scope: 'repo read:org gist' });
    expect(flow.start.user_code).toBe('ABCD-EFGH');

    const token = await outcomeOf(flow);
    expect(polls).toBe(2);
    for (const poll of requests.slice(1)) {
      expect(poll.url).toBe('https://github.com/login/oauth/access_token');
      expect(form(poll.body)).toEqual({ grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: 'dc-fixture', client_id: '178c6fc778ccc68e1d6a' });
    }
    // OAuth-app tokens do not expire: stored with the one-year nominal lifetime, no refresh token.
    expect(token.access_token).toBe('gho_fixture');
    expect(token.refresh_token).toBeUndefined();
    expect(token.expiry - Date.now() / 1000).toBeGreaterThan(364 * 24 * 3600);
  });
});
