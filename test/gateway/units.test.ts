import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { codexAccountId, downstreamHeaders, upstreamHeaders } from '../../src/gateway/inject.js';
import { buildRoutes, qwenApiBase, rulesAllow } from '../../src/gateway/routes.js';
import { SecretRedactor } from '../../src/gateway/scan.js';
import { upstreamUrl } from '../../src/gateway/server.js';
import { BUILTIN_PRESETS } from '../../src/oauth/presets/index.js';
import { Dispatcher } from '../../src/server/dispatch.js';
import { Policy } from '../../src/server/policy.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { capturingLogger } from '../refresh/fakes.js';

function redact(chunks: Buffer[], secrets: string[]): Promise<{ out: Buffer; masked: number }> {
  return new Promise((resolve, reject) => {
    const r = new SecretRedactor(secrets);
    const parts: Buffer[] = [];
    r.on('data', (d: Buffer) => parts.push(d));
    r.on('end', () => resolve({ out: Buffer.concat(parts), masked: r.masked }));
    r.on('error', reject);
    for (const c of chunks) r.write(c);
    r.end();
  });
}

describe('SecretRedactor', () => {
  it('masks every occurrence however the stream is cut, and changes nothing else', async () => {
    const secret = 'sk-ant-oat01-SECRETsecret_123';
    await fc.assert(
      fc.asyncProperty(fc.array(fc.oneof(fc.constant(secret), fc.constant('sk-ant-'), fc.string({ maxLength: 20 })), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 8 }), async (parts, cuts) => {
        const whole = Buffer.from(parts.join(''));
        const points = [...new Set(cuts.map((c) => c % (whole.length + 1)))].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let last = 0;
        for (const p of points) {
          chunks.push(Buffer.from(whole.subarray(last, p)));
          last = p;
        }
        chunks.push(Buffer.from(whole.subarray(last)));
        const { out } = await redact(chunks, [secret]);
        const expected = whole.toString().split(secret).join('*'.repeat(secret.length));
        expect(out.toString()).toBe(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('holds back only a tail that could start a secret', async () => {
    const r = new SecretRedactor(['abcdefghij']);
    const out: string[] = [];
    r.on('data', (d: Buffer) => out.push(d.toString()));
    r.write(Buffer.from('event: x\ndata: 1\n\n'));
    r.write(Buffer.from('zzz abc'));
    await new Promise((res) => setImmediate(res));
    expect(out).toEqual(['event: x\ndata: 1\n\n', 'zzz ']);
  });
});

describe('headers', () => {
  const route = { kind: 'oauth' as const, name: 'anthropic', provider: 'anthropic', bucket: 'default', apiBase: 'https://api.example', rules: undefined, quirks: ['anthropic-oauth' as const] };
  const injection = { secret: 'real-token-123456', headers: { authorization: 'Bearer real-token-123456' } };

  it('strips every inbound credential and hop-by-hop header, and those the Connection header names', () => {
    const out = upstreamHeaders(
      {
        authorization: 'Bearer placeholder',
        'x-api-key': 'k',
        'x-goog-api-key': 'g',
        'api-key': 'a',
        cookie: 'c',
        'proxy-authorization': 'p',
        connection: 'keep-alive, x-secret-hop',
        'x-secret-hop': 'h',
        'transfer-encoding': 'chunked',
        host: '127.0.0.1:1',
        'accept-encoding': 'gzip, br',
        'anthropic-beta': 'a-1, oauth-2025-04-20',
        'content-type': 'application/json',
      },
      route,
      injection,
      'api.example',
    );
    expect(out).toEqual({
      host: 'api.example',
      'accept-encoding': 'identity',
      'anthropic-beta': 'a-1,oauth-2025-04-20',
      'content-type': 'application/json',
      authorization: 'Bearer real-token-123456',
    });
  });

  it('drops response headers carrying a secret and hop-by-hop ones', () => {
    expect(downstreamHeaders({ 'x-leak': 'xx real-token-123456', 'x-fine': ['a=1'], 'content-type': 'text/plain', connection: 'close', 'keep-alive': '5' }, ['real-token-123456'])).toEqual({ 'content-type': 'text/plain', 'x-fine': ['a=1'] });
    // An API session cookie is a credential too.
    expect(downstreamHeaders({ 'set-cookie': ['session=abc'], 'content-type': 'text/plain' }, [])).toEqual({ 'content-type': 'text/plain' });
  });

  it('reads the ChatGPT account id from the id_token claims', () => {
    const payload = Buffer.from(JSON.stringify({ 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-42' } })).toString('base64url');
    expect(codexAccountId({ access_token: 'x', expiry: 1, id_token: `e30.${payload}.sig` })).toBe('acct-42');
    expect(codexAccountId({ access_token: 'x', expiry: 1, account_id: 'acct-7', id_token: `e30.${payload}.sig` })).toBe('acct-7');
    expect(codexAccountId({ access_token: 'x', expiry: 1, id_token: 'garbage' })).toBeNull();
  });
});

describe('routes', () => {
  it('come from the allowed credentials only, with preset api_base values and built-in key routes', () => {
    const config = parseConfig('{}', 'config.json');
    const table = buildRoutes({ policy: Policy.from({ allow: ['anthropic', 'codex:work', 'qwen', 'unknownprov'], keys: ['openai', 'mykey'], allowAll: false, readOnly: false }), config });
    expect([...table.routes.keys()].sort()).toEqual(['anthropic', 'codex', 'keys/openai', 'qwen']);
    expect(table.routes.get('anthropic')).toMatchObject({ apiBase: 'https://api.anthropic.com', bucket: 'default' });
    expect(table.routes.get('codex')).toMatchObject({ apiBase: 'https://chatgpt.com/backend-api/codex', bucket: 'work' });
    expect(table.routes.get('keys/openai')).toMatchObject({ apiBase: 'https://api.openai.com/v1', header: 'authorization' });
    expect(table.providers.sort()).toEqual(['anthropic', 'codex', 'qwen']);
    expect(table.keys).toEqual(['openai']);
    expect(table.skipped.join('\n')).toContain('key mykey: no keys.mykey.route');
    expect(BUILTIN_PRESETS.github!.api_base).toBe('https://api.github.com');
    expect(BUILTIN_PRESETS.gemini!.api_base).toBe('https://cloudcode-pa.googleapis.com');
  });

  it('qwen takes its base from the token', () => {
    expect(qwenApiBase('portal.qwen.ai')).toBe('https://portal.qwen.ai/v1');
    expect(qwenApiBase('https://dashscope.aliyuncs.com/compatible-mode/v1/')).toBe('https://dashscope.aliyuncs.com/compatible-mode/v1');
    expect(qwenApiBase('http://evil.example')).toBeNull();
    expect(qwenApiBase(undefined)).toBeNull();
  });

  it('allowlists match whole path segments', () => {
    const rules = { methods: ['POST'], path_prefixes: ['/v1/messages'] };
    expect(rulesAllow(rules, 'POST', '/v1/messages')).toBe(true);
    expect(rulesAllow(rules, 'POST', '/v1/messages/count_tokens')).toBe(true);
    expect(rulesAllow(rules, 'POST', '/v1/messagesX')).toBe(false);
    expect(rulesAllow(rules, 'GET', '/v1/messages')).toBe(false);
  });

  it('upstream URLs stay on the base origin and under its path', () => {
    expect(upstreamUrl('https://chatgpt.com/backend-api/codex', '/responses?x=1')!.href).toBe('https://chatgpt.com/backend-api/codex/responses?x=1');
    expect(upstreamUrl('https://chatgpt.com/backend-api/codex', '/../../admin')).toBeNull();
    expect(upstreamUrl('https://api.example', '//evil.example/x')!.origin).toBe('https://api.example');
    expect(upstreamUrl('https://api.example', '@evil.example/x')).toBeNull();
  });
});

describe('config merge over built-ins', () => {
  it('accepts a partial provider entry and merges it field by field over the preset', () => {
    const config = parseConfig(JSON.stringify({ providers: { anthropic: { api_base: 'https://proxy.example/anthropic', token_endpoint: 'https://id.example/token' } } }), 'c.json');
    expect(config.providers.anthropic).toMatchObject({ ...BUILTIN_PRESETS.anthropic, api_base: 'https://proxy.example/anthropic', token_endpoint: 'https://id.example/token' });
  });

  it('still rejects unknown fields and a partial entry for a provider with no preset', () => {
    expect(() => parseConfig(JSON.stringify({ providers: { anthropic: { api_bse: 'https://x' } } }), 'c.json')).toThrow(/providers\.anthropic: Unrecognized key: "api_bse"/);
    expect(() => parseConfig(JSON.stringify({ providers: { corp: { api_base: 'https://x' } } }), 'c.json')).toThrow(/providers\.corp\.flow/);
    expect(() => parseConfig(JSON.stringify({ keys: { openai: { route: { header: 'cookie' } } } }), 'c.json')).toThrow(/keys\.openai\.route\.header/);
    expect(() => parseConfig(JSON.stringify({ keys: { corp: { route: { header: 'x-api-key' } } } }), 'c.json')).toThrow(/keys\.corp\.route\.api_base/);
  });

  it('merges a key route over the built-in one', () => {
    const config = parseConfig(JSON.stringify({ keys: { gemini: { route: { api_base: 'https://gl.example' } }, corp: { route: { api_base: 'https://corp.example', header: 'authorization', methods: ['POST'] } } } }), 'c.json');
    expect(config.keys.gemini!.route).toEqual({ api_base: 'https://gl.example', header: 'x-goog-api-key' });
    expect(config.keys.corp!.route).toEqual({ api_base: 'https://corp.example', header: 'authorization', methods: ['POST'] });
  });
});

describe('zero credentials on the socket', () => {
  it('get_token, refresh_token and get_api_key refuse what the gateway serves, naming the gateway', async () => {
    const tokens = new MemoryTokenStore();
    await tokens.saveToken('anthropic', { access_token: 'real-access-token', expiry: Math.floor(Date.now() / 1000) + 3600 });
    await tokens.saveToken('github', { access_token: 'gh-token', expiry: Math.floor(Date.now() / 1000) + 3600 });
    const keys = new MemoryKeyStore();
    await keys.saveKey('openai', 'sk-real');
    const policy = Policy.from({ allow: ['anthropic', 'github'], keys: ['openai'], allowAll: false, readOnly: false });
    policy.reserveForGateway(['anthropic'], ['openai']);
    const credentials = {
      getToken: (p: string, b: string) => tokens.getToken(p, b),
      refresh: async () => {
        throw new Error('not reached');
      },
      save: async () => undefined,
      remove: async () => 'entry' as const,
      close: async () => undefined,
    };
    const d = new Dispatcher({ tokens, keys, credentials, policy, logger: capturingLogger().logger });
    const ctx = { peer: { pid: 1, uid: 1, gid: 1 }, signal: new AbortController().signal, cancel: () => false } as never;
    const ask = async (op: string, payload: object) => (await d.dispatch({ v: 1, id: 1, op, payload }, ctx)).outcome;
    for (const [op, payload] of [
      ['get_token', { provider: 'anthropic' }],
      ['refresh_token', { provider: 'anthropic' }],
      ['get_api_key', { name: 'openai' }],
    ] as const) {
      const outcome = await ask(op, payload);
      expect(outcome).toMatchObject({ ok: false, code: 'UNAUTHORIZED', error: expect.stringContaining('gateway') });
      expect(JSON.stringify(outcome)).not.toMatch(/real-access-token|sk-real/);
    }
    expect(await ask('get_token', { provider: 'github' })).toMatchObject({ ok: true, data: { access_token: 'gh-token' } });
  });
});
