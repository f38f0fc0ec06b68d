import { describe, expect, it } from 'vitest';
import { startFlow } from '../../src/login/flows.js';
import { ProviderRegistry } from '../../src/oauth/registry.js';

/**
 * The presets' real endpoints are not reachable here (and must never be
 * contacted from tests): every request goes to a recording fetch, and the
 * requests are compared with the documented shapes of each provider's login.
 */
function recordingRegistry(deviceAnswer: object) {
  const requests: Array<{ url: string; method: string; body: string }> = [];
  const registry = new ProviderRegistry({
    runtime: {
      fetch: async (url, init) => {
        requests.push({ url, method: String(init.method ?? 'GET'), body: typeof init.body === 'string' ? init.body : init.body instanceof URLSearchParams ? init.body.toString() : '' });
        if (/device/.test(url)) return new Response(JSON.stringify(deviceAnswer), { status: 200, headers: { 'content-type': 'application/json' } });
        return new Response('{"error":"not_expected_in_this_test"}', { status: 500, headers: { 'content-type': 'application/json' } });
      },
    },
  });
  return { registry, requests };
}

const deviceAnswer = { device_code: 'dc-fixture', user_code: 'ABCD-EFGH', verification_uri: 'https://example.invalid/device', expires_in: 900, interval: 5 };

function params(url: string): Record<string, string> {
  return Object.fromEntries(new URL(url).searchParams);
}

describe('preset login requests (no network)', () => {
  it('anthropic: PKCE code paste at claude.ai with the console callback and code=true', async () => {
    const { registry, requests } = recordingRegistry(deviceAnswer);
    const flow = await startFlow(registry.get('anthropic'), new AbortController().signal);
    const url = new URL(flow.start.auth_url!);
    expect(`${url.origin}${url.pathname}`).toBe('https://claude.ai/oauth/authorize');
    expect(params(url.href)).toMatchObject({
      client_id: '9d1c250a-e61b-44d9-88ed-5944d1962f5e',
      response_type: 'code',
      redirect_uri: 'https://console.anthropic.com/oauth/code/callback',
      scope: 'org:create_api_key user:profile user:inference',
      code_challenge_method: 'S256',
      code: 'true',
    });
    expect(params(url.href).code_challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(params(url.href).state).toBeTruthy();
    expect(params(url.href)).not.toHaveProperty('code_verifier');
    expect(flow.start.flow_type).toBe('pkce_redirect');
    expect(requests).toEqual([]);
    flow.cancel();
  });

  it('gemini: Google consent with offline access and the Code Assist callback', async () => {
    const { registry, requests } = recordingRegistry(deviceAnswer);
    const flow = await startFlow(registry.get('gemini'), new AbortController().signal);
    const p = params(flow.start.auth_url!);
    expect(flow.start.auth_url!.startsWith('https://accounts.google.com/o/oauth2/v2/auth?')).toBe(true);
    expect(p).toMatchObject({
      client_id: '681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com',
      redirect_uri: 'https://codeassist.google.com/authcode',
      access_type: 'offline',
      prompt: 'consent',
      code_challenge_method: 'S256',
      response_type: 'code',
    });
    expect(p.scope!.split(' ')).toEqual(expect.arrayContaining(['https://www.googleapis.com/auth/cloud-platform']));
    expect(requests.filter((r) => !r.url.includes('.well-known'))).toEqual([]);
    flow.cancel();
  });

  it('codex: loopback redirect on localhost:1455 with the simplified-flow parameters', async () => {
    const { registry } = recordingRegistry(deviceAnswer);
    const flow = await startFlow(registry.get('codex'), new AbortController().signal).catch((e: Error) => e);
    if (flow instanceof Error) throw new Error(`codex needs 127.0.0.1:1455 free for its registered redirect: ${flow.message}`);
    try {
      const p = params(flow.start.auth_url!);
      expect(flow.start.auth_url!.startsWith('https://auth.openai.com/oauth/authorize?')).toBe(true);
      expect(p).toMatchObject({
        client_id: 'app_EMoamEEZ73f0CkXaXp7hrann',
        redirect_uri: 'http://localhost:1455/auth/callback',
        scope: 'openid profile email offline_access',
        id_token_add_organizations: 'true',
        codex_cli_simplified_flow: 'true',
        code_challenge_method: 'S256',
      });
      expect(flow.start).toMatchObject({ flow_type: 'browser_redirect', pollIntervalMs: 2000 });
    } finally {
      flow.cancel();
    }
  });

  it('qwen: device authorization with a PKCE challenge', async () => {
    const { registry, requests } = recordingRegistry(deviceAnswer);
    const flow = await startFlow(registry.get('qwen'), new AbortController().signal);
    flow.cancel();
    const req = requests.find((r) => r.url === 'https://chat.qwen.ai/api/v1/oauth2/device/code')!;
    expect(req.method).toBe('POST');
    const body = Object.fromEntries(new URLSearchParams(req.body));
    expect(body).toMatchObject({ client_id: 'f0304373b74a44d2b584a3fb70ca9e56', scope: 'openid profile email model.completion', code_challenge_method: 'S256' });
    expect(body.code_challenge).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(flow.start).toEqual({ flow_type: 'device_code', verification_url: 'https://example.invalid/device', user_code: 'ABCD-EFGH', pollIntervalMs: 5000 });
  });

  it('github: device authorization for the gh client id and scopes, no PKCE', async () => {
    const { registry, requests } = recordingRegistry(deviceAnswer);
    const flow = await startFlow(registry.get('github'), new AbortController().signal);
    flow.cancel();
    const req = requests.find((r) => r.url === 'https://github.com/login/device/code')!;
    const body = Object.fromEntries(new URLSearchParams(req.body));
    expect(body).toMatchObject({ client_id: '178c6fc778ccc68e1d6a', scope: 'repo read:org gist' });
    expect(body).not.toHaveProperty('code_challenge');
    expect(flow.start.user_code).toBe('ABCD-EFGH');
  });
});
