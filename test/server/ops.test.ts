import { afterEach, describe, expect, it } from 'vitest';
import { CredproxyError } from '../../src/errors.js';
import type { CredentialService } from '../../src/refresh/types.js';
import type { OAuthToken } from '../../src/store/types.js';
import { SimpleCredentials } from '../support/simple-credentials.js';
import { startHarness, type Harness, type SpyTokenStore } from './helpers.js';

const REFRESH_SECRET = 'rt-SECRET-0123456789abcdef';
const stored = (over: Partial<OAuthToken> = {}): OAuthToken => ({
  access_token: 'at-1',
  expiry: 2_000_000_000,
  token_type: 'Bearer',
  refresh_token: REFRESH_SECRET,
  scope: 'a b',
  account_id: 'acct-7',
  ...over,
});

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('token operations', () => {
  it('get_token answers the sanitized token, extra fields kept, refresh_token never on the wire', async () => {
    h = await startHarness();
    await h.tokens.inner.saveToken('anthropic', stored());
    await h.tokens.inner.saveToken('anthropic', stored({ access_token: 'at-work' }), 'work');
    const c = await h.client();
    const def = await c.request('get_token', { provider: 'anthropic' });
    expect(def).toEqual({
      v: 1,
      id: expect.any(String),
      ok: true,
      data: { access_token: 'at-1', expiry: 2_000_000_000, token_type: 'Bearer', scope: 'a b', account_id: 'acct-7' },
    });
    const work = await c.request('get_token', { provider: 'anthropic', bucket: 'work' });
    expect((work.data as OAuthToken).access_token).toBe('at-work');
    expect(c.receivedText).not.toContain(REFRESH_SECRET);
    expect(c.receivedText).not.toContain('refresh_token');
  });

  it('get_token for nothing stored is NOT_FOUND naming provider and bucket, and how to store one', async () => {
    h = await startHarness();
    const c = await h.client();
    const r = await c.request('get_token', { provider: 'gemini', bucket: 'b2' });
    expect(r).toMatchObject({ ok: false, code: 'NOT_FOUND', error: 'no token stored for gemini:b2; run `credproxy login gemini --bucket b2` (or, on the host, pipe a token JSON to `credproxy token import gemini --bucket b2`)' });
  });

  it('save_token drops a forged refresh_token and keeps the stored one, merging other fields', async () => {
    const soon = Math.floor(Date.now() / 1000) + 3600;
    h = await startHarness();
    await h.tokens.inner.saveToken('qwen', stored({ resource_url: 'https://r.example' }));
    const c = await h.client();
    const r = await c.request('save_token', {
      provider: 'qwen',
      token: { access_token: 'at-new', expiry: soon, refresh_token: 'FORGED', scope: 'x' },
    });
    expect(r).toMatchObject({ ok: true, data: {} });
    expect(await h.tokens.inner.getToken('qwen')).toEqual({
      access_token: 'at-new',
      expiry: soon,
      token_type: 'Bearer',
      refresh_token: REFRESH_SECRET,
      scope: 'x',
      account_id: 'acct-7',
      resource_url: 'https://r.example',
    });
  });

  it('save_token of a new entry stores it without any refresh_token', async () => {
    h = await startHarness();
    const c = await h.client();
    const r = await c.request('save_token', {
      provider: 'corp',
      bucket: 'ci',
      token: { access_token: 'at-c', expiry: 123, refresh_token: 'FORGED', id_token: 'idt' },
    });
    expect(r.ok).toBe(true);
    expect(await h.tokens.inner.getToken('corp', 'ci')).toEqual({ access_token: 'at-c', expiry: 123, id_token: 'idt' });
  });

  it('remove_token removes an entry without a refresh token, and a second remove is ok too (idempotent)', async () => {
    h = await startHarness();
    const { refresh_token: _rt, ...plain } = stored();
    await h.tokens.inner.saveToken('github', plain);
    const c = await h.client();
    expect(await c.request('remove_token', { provider: 'github' })).toMatchObject({ ok: true, data: { removed: 'entry' } });
    expect(await h.tokens.inner.getToken('github')).toBeNull();
    const again = await c.request('remove_token', { provider: 'github' });
    expect(again).toMatchObject({ ok: true, data: {} });
    expect(again.data).not.toHaveProperty('removed');
    expect(await c.request('remove_token', { provider: 'github', bucket: 'never-stored' })).toMatchObject({ ok: true, data: {} });
  });

  it('remove_token from the sandbox keeps the host refresh token and expires the access token it could see', async () => {
    h = await startHarness();
    await h.tokens.inner.saveToken('github', stored());
    const c = await h.client();
    expect(await c.request('remove_token', { provider: 'github' })).toMatchObject({ ok: true, data: { removed: 'access_token' } });
    expect(await h.tokens.inner.getToken('github')).toEqual({ ...stored(), expiry: 0 });
  });

  it('list_providers and list_buckets answer what is stored', async () => {
    h = await startHarness();
    await h.tokens.inner.saveToken('b-prov', stored());
    await h.tokens.inner.saveToken('a-prov', stored(), 'x');
    await h.tokens.inner.saveToken('a-prov', stored(), 'y');
    const c = await h.client();
    expect(await c.request('list_providers')).toMatchObject({ ok: true, data: { providers: ['a-prov', 'b-prov'] } });
    expect(await c.request('list_buckets', { provider: 'a-prov' })).toMatchObject({ ok: true, data: { buckets: ['x', 'y'] } });
    expect(await c.request('list_buckets', { provider: 'none' })).toMatchObject({ ok: true, data: { buckets: [] } });
  });

  it('refresh_token goes through the credential service; its wire errors pass through', async () => {
    h = await startHarness();
    await h.tokens.inner.saveToken('anthropic', stored());
    const c = await h.client();
    expect(await c.request('refresh_token', { provider: 'anthropic' })).toMatchObject({
      ok: false,
      code: 'INTERNAL_ERROR',
      error: 'no provider configured for anthropic',
    });
  });

  it('refresh_token answers the refreshed token sanitized', async () => {
    const credentials = (tokens: SpyTokenStore): CredentialService => {
      const base = new SimpleCredentials(tokens);
      return {
        getToken: (p, b) => base.getToken(p, b),
        remove: (p, b) => base.remove(p, b),
        save: (p, b, t) => base.save(p, b, t),
        close: () => base.close(),
        refresh: async () => stored({ access_token: 'at-fresh', refresh_token: 'rt-NEW-SECRET' }),
      };
    };
    h = await startHarness({ credentials });
    const c = await h.client();
    const r = await c.request('refresh_token', { provider: 'anthropic', bucket: 'b' });
    expect(r).toMatchObject({ ok: true, data: { access_token: 'at-fresh', account_id: 'acct-7' } });
    expect(r.data).not.toHaveProperty('refresh_token');
    expect(c.receivedText).not.toContain('rt-NEW-SECRET');
  });
});

describe('API key operations', () => {
  it('get_api_key answers the key or NOT_FOUND; list_api_keys lists names', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('openai', 'sk-123');
    await h.keys.inner.saveKey('brave', 'bk-9');
    const c = await h.client();
    expect(await c.request('get_api_key', { name: 'openai' })).toMatchObject({ ok: true, data: { key: 'sk-123' } });
    expect(await c.request('get_api_key', { name: 'nope' })).toMatchObject({ ok: false, code: 'NOT_FOUND', error: 'no API key named nope' });
    expect(await c.request('list_api_keys')).toMatchObject({ ok: true, data: { keys: ['brave', 'openai'] } });
  });
});

describe('login operations without a login service', () => {
  it('pass schema and policy, then answer INTERNAL_ERROR', async () => {
    h = await startHarness();
    const c = await h.client();
    const sid = '0123456789abcdef0123456789abcdef';
    for (const [op, payload] of [
      ['oauth_initiate', { provider: 'anthropic' }],
      ['oauth_exchange', { session_id: sid, code: 'the-code' }],
      ['oauth_poll', { session_id: sid }],
      ['oauth_cancel', { session_id: sid }],
    ] as const) {
      expect(await c.request(op, payload)).toMatchObject({ ok: false, code: 'INTERNAL_ERROR', error: 'login is not available on this server' });
    }
    expect(await c.request('oauth_poll', { session_id: 'short' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
  });
});

describe('error mapping', () => {
  function failing(err: unknown): (tokens: SpyTokenStore) => CredentialService {
    return (tokens) => {
      const base = new SimpleCredentials(tokens);
      return { getToken: async () => Promise.reject(err), refresh: async () => Promise.reject(err), save: (p, b, t) => base.save(p, b, t), remove: (p, b) => base.remove(p, b), close: () => base.close() };
    };
  }

  it('RATE_LIMITED from the service keeps its retryAfter', async () => {
    h = await startHarness({ credentials: failing(new CredproxyError('RATE_LIMITED', 'refresh cooldown', { retryAfter: 17 })) });
    const c = await h.client();
    expect(await c.request('refresh_token', { provider: 'p' })).toMatchObject({ ok: false, code: 'RATE_LIMITED', retryAfter: 17 });
  });

  it('a foreign error becomes a generic INTERNAL_ERROR; its message reaches neither the wire nor the log', async () => {
    const secret = 'Authorization: Bearer LEAKY-SECRET';
    h = await startHarness({ credentials: failing(new TypeError(secret)) });
    const c = await h.client();
    expect(await c.request('get_token', { provider: 'p' })).toMatchObject({ ok: false, code: 'INTERNAL_ERROR', error: 'internal error on the host' });
    expect(c.receivedText).not.toContain('LEAKY');
    expect(h.logs.text()).toContain('TypeError');
    expect(h.logs.text()).not.toContain('LEAKY');
  });

  it('a host-local code becomes INTERNAL_ERROR with a fixed text', async () => {
    h = await startHarness({ credentials: failing(new CredproxyError('CORRUPT_ENTRY', 'entry token:p:default is corrupt')) });
    const c = await h.client();
    const r = await c.request('get_token', { provider: 'p' });
    expect(r).toMatchObject({ ok: false, code: 'INTERNAL_ERROR' });
    expect(r.error).toMatch(/corrupt/);
  });
});

describe('schema errors never touch a store', () => {
  it('answers INVALID_REQUEST naming the problem, with zero store calls', async () => {
    h = await startHarness();
    const c = await h.client();
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ v: 1, id: 'a', op: 'no_such_op', payload: {} }, /unknown op/],
      [{ v: 1, id: 'b', op: 'get_token', payload: {} }, /missing provider/],
      [{ v: 1, id: 'c', op: 'get_token', payload: { provider: 5 } }, /wrong type for provider/],
      [{ v: 1, id: 'd', op: 'get_token', payload: { provider: 'p', bucket: null } }, /wrong type for bucket/],
      [{ v: 1, id: 'e', op: 'get_token', payload: { provider: 'has space' } }, /bad format for provider/],
      [{ v: 1, id: 'f', op: 'get_api_key', payload: { name: 'x@y' } }, /bad format for name/],
      [{ v: 1, id: 'g', op: 'get_token', payload: ['provider'] }, /payload must be an object/],
      [{ v: 1, id: 'h', op: 'get_token', payload: null }, /payload must be an object/],
      [{ v: 1, id: 'i', op: 'save_token', payload: { provider: 'p', token: { expiry: 1 } } }, /missing token\.access_token/],
      [{ v: 1, id: 'j', op: 'save_token', payload: { provider: 'p' } }, /missing token/],
      [{ v: 2, id: 'k', op: 'get_token', payload: { provider: 'p' } }, /protocol version/],
      [{ v: 1, id: 'l', op: 'list_buckets', payload: { provider: 'p'.repeat(65) } }, /provider/],
      [{ v: 1, id: 'm', op: 'cancel', payload: {} }, /missing targetId/],
    ];
    for (const [msg, reason] of cases) {
      c.send(msg);
      const r = await c.answerFor(msg.id as string);
      expect(r, JSON.stringify(msg)).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
      expect(r.error, JSON.stringify(msg)).toMatch(reason);
    }
    expect(h.tokens.calls).toBe(0);
    expect(h.keys.calls).toBe(0);
    // Unknown fields are ignored.
    await h.tokens.inner.saveToken('p', stored());
    expect(await c.request('get_token', { provider: 'p', extra: { deep: 1 } })).toMatchObject({ ok: true });
  });
});

describe('policy', () => {
  it('serves exactly the allowed provider:bucket pairs', async () => {
    h = await startHarness({ policy: { allowAll: false, allow: ['anthropic', 'corp:ci', 'gemini:*'] } });
    for (const [p, b] of [['anthropic', 'default'], ['anthropic', 'work'], ['corp', 'ci'], ['corp', 'default'], ['gemini', 'x'], ['qwen', 'default']]) {
      await h.tokens.inner.saveToken(p!, stored(), b);
    }
    const callsBefore = h.tokens.calls;
    const c = await h.client();
    const get = (provider: string, bucket?: string) => c.request('get_token', bucket === undefined ? { provider } : { provider, bucket });
    expect(await get('anthropic')).toMatchObject({ ok: true });
    expect(await get('anthropic', 'work')).toMatchObject({ ok: false, code: 'UNAUTHORIZED', error: 'anthropic:work is not allowed by the policy' });
    expect(await get('corp', 'ci')).toMatchObject({ ok: true });
    expect(await get('corp')).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await get('gemini', 'x')).toMatchObject({ ok: true });
    // gemini:* covers the default bucket too: allowed, nothing stored there.
    expect(await get('gemini')).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    expect(await get('qwen')).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('refresh_token', { provider: 'qwen' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('save_token', { provider: 'qwen', token: { access_token: 'x', expiry: 1 } })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('oauth_initiate', { provider: 'qwen' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    // 4 allowed get_token reads; the denied ones never reached the store.
    expect(h.tokens.calls - callsBefore).toBe(4);
  });

  it('filters list results and refuses list_buckets outside the policy', async () => {
    h = await startHarness({ policy: { allowAll: false, allow: ['anthropic', 'corp:ci'], keys: ['openai'] } });
    for (const [p, b] of [['anthropic', 'default'], ['anthropic', 'work'], ['corp', 'ci'], ['corp', 'other'], ['qwen', 'default']]) {
      await h.tokens.inner.saveToken(p!, stored(), b);
    }
    await h.keys.inner.saveKey('openai', 'sk-1');
    await h.keys.inner.saveKey('secret-other', 'sk-2');
    const c = await h.client();
    expect(await c.request('list_providers')).toMatchObject({ data: { providers: ['anthropic', 'corp'] } });
    expect(await c.request('list_buckets', { provider: 'anthropic' })).toMatchObject({ data: { buckets: ['default'] } });
    expect(await c.request('list_buckets', { provider: 'corp' })).toMatchObject({ data: { buckets: ['ci'] } });
    const keysCalls = h.keys.calls;
    const tokenCalls = h.tokens.calls;
    expect(await c.request('list_buckets', { provider: 'qwen' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_api_key', { name: 'secret-other' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(h.tokens.calls).toBe(tokenCalls);
    expect(h.keys.calls).toBe(keysCalls);
    expect(await c.request('get_api_key', { name: 'openai' })).toMatchObject({ ok: true, data: { key: 'sk-1' } });
    expect(await c.request('list_api_keys')).toMatchObject({ data: { keys: ['openai'] } });
    expect(c.receivedText).not.toContain('sk-2');
  });

  it('with no rule nothing is served', async () => {
    h = await startHarness({ policy: { allowAll: false } });
    await h.tokens.inner.saveToken('anthropic', stored());
    await h.keys.inner.saveKey('openai', 'sk-1');
    const c = await h.client();
    expect(await c.request('get_token', { provider: 'anthropic' })).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(await c.request('get_api_key', { name: 'openai' })).toMatchObject({ code: 'UNAUTHORIZED' });
    expect(await c.request('list_providers')).toMatchObject({ data: { providers: [] } });
    expect(await c.request('list_api_keys')).toMatchObject({ data: { keys: [] } });
  });

  it('read-only refuses save, remove and every login op before touching anything', async () => {
    h = await startHarness({ policy: { allowAll: true, readOnly: true } });
    await h.tokens.inner.saveToken('anthropic', stored());
    const c = await h.client();
    const calls = h.tokens.calls;
    const sid = '0123456789abcdef0123456789abcdef';
    for (const [op, payload] of [
      ['save_token', { provider: 'anthropic', token: { access_token: 'x', expiry: 1 } }],
      ['remove_token', { provider: 'anthropic' }],
      ['oauth_initiate', { provider: 'anthropic' }],
      ['oauth_exchange', { session_id: sid, code: 'c' }],
      ['oauth_poll', { session_id: sid }],
      ['oauth_cancel', { session_id: sid }],
    ] as const) {
      expect(await c.request(op, payload)).toMatchObject({ ok: false, code: 'UNAUTHORIZED', error: 'the policy is read-only' });
    }
    expect(h.tokens.calls).toBe(calls);
    expect(await h.tokens.inner.getToken('anthropic')).toMatchObject({ access_token: 'at-1' });
    expect(await c.request('get_token', { provider: 'anthropic' })).toMatchObject({ ok: true });
  });
});
