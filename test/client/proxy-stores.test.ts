import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONNECTION_LOST_MESSAGE, KEY_MANAGEMENT_UNAVAILABLE, ProxyKeyStore, ProxySocketClient, ProxyTokenStore } from '../../src/client/index.js';
import { CredproxyError } from '../../src/errors.js';
import type { OAuthToken } from '../../src/store/types.js';
import { FakeProxy, type Frame, type Reply } from '../support/fake-proxy.js';
import { expectValidClientFrames } from './client-frames.js';

/** A scripted host: an in-memory store behind the wire protocol, with per-op failure injection. */
class ScriptedHost {
  readonly tokens = new Map<string, Frame>();
  readonly keys = new Map<string, string>();
  readonly failures = new Map<string, Reply>();

  answer(op: string, p: Frame): Reply {
    const injected = this.failures.get(op);
    if (injected !== undefined) return injected;
    const k = `${String(p.provider)}:${String(p.bucket ?? 'default')}`;
    const notFound = { code: 'NOT_FOUND', error: 'nothing stored' };
    switch (op) {
      case 'get_token':
        return this.tokens.has(k) ? { data: this.tokens.get(k) } : notFound;
      case 'refresh_token':
        return this.tokens.has(k) ? { data: { ...this.tokens.get(k), access_token: 'refreshed' } } : notFound;
      case 'save_token':
        this.tokens.set(k, p.token as Frame);
        return { data: {} };
      case 'remove_token':
        return this.tokens.delete(k) ? { data: {} } : notFound;
      case 'list_providers':
        return { data: { providers: [...new Set([...this.tokens.keys()].map((x) => x.split(':')[0]))].sort() } };
      case 'list_buckets':
        return { data: { buckets: [...this.tokens.keys()].filter((x) => x.startsWith(`${String(p.provider)}:`)).map((x) => x.split(':')[1]) } };
      case 'get_api_key':
        return this.keys.has(String(p.name)) ? { data: { key: this.keys.get(String(p.name)) } } : notFound;
      case 'list_api_keys':
        return { data: { keys: [...this.keys.keys()].sort() } };
      default:
        return { code: 'INVALID_REQUEST', error: 'unsupported' };
    }
  }
}

let proxy: FakeProxy;
let host: ScriptedHost;
let client: ProxySocketClient;
let tokens: ProxyTokenStore;
let keys: ProxyKeyStore;

beforeEach(async () => {
  host = new ScriptedHost();
  proxy = await FakeProxy.start({ capabilityToken: 'cap', handler: ({ op, payload }) => host.answer(op, payload) });
  client = new ProxySocketClient({ socket: proxy.address, capabilityToken: 'cap' });
  tokens = new ProxyTokenStore(client);
  keys = new ProxyKeyStore(client);
});

afterEach(async () => {
  expectValidClientFrames(proxy);
  await client.close();
  await proxy.close();
});

/** Every request frame the host saw, as [op, payload]. */
function seen(): Array<[unknown, unknown]> {
  return proxy.connections.flatMap((c) => c.requests.map((f): [unknown, unknown] => [f.op, f.payload]));
}

async function failure(p: Promise<unknown>): Promise<CredproxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CredproxyError);
    return err as CredproxyError;
  }
  throw new Error('expected a rejection');
}

const TOKEN: OAuthToken = {
  access_token: 'at-1',
  expiry: 2_000_000_000,
  token_type: 'Bearer',
  refresh_token: 'RT-MUST-NOT-CROSS',
  scope: 'a b',
  id_token: 'idt',
  account_id: 'acct-9',
};
const { refresh_token: _rt, ...SANITIZED } = TOKEN;

describe('ProxyTokenStore', () => {
  it('saveToken sends save_token without the refresh token; getToken reads it back with extra fields', async () => {
    await tokens.saveToken('anthropic', TOKEN, 'work');
    expect(seen()).toEqual([['save_token', { provider: 'anthropic', bucket: 'work', token: SANITIZED }]]);
    expect(proxy.connections[0]!.receivedText).not.toContain('RT-MUST-NOT-CROSS');

    await expect(tokens.getToken('anthropic', 'work')).resolves.toEqual(SANITIZED);
    expect(seen()[1]).toEqual(['get_token', { provider: 'anthropic', bucket: 'work' }]);
  });

  it('leaves the default bucket to the host', async () => {
    await tokens.saveToken('gemini', SANITIZED as OAuthToken);
    await tokens.getToken('gemini');
    expect(seen()).toEqual([
      ['save_token', { provider: 'gemini', token: SANITIZED }],
      ['get_token', { provider: 'gemini' }],
    ]);
    expect(host.tokens.has('gemini:default')).toBe(true);
  });

  it('maps NOT_FOUND to null on get and to silence on remove', async () => {
    await expect(tokens.getToken('nobody')).resolves.toBeNull();
    await expect(tokens.removeToken('nobody', 'b')).resolves.toBeUndefined();
    expect(seen()).toEqual([
      ['get_token', { provider: 'nobody' }],
      ['remove_token', { provider: 'nobody', bucket: 'b' }],
    ]);
  });

  it('removeToken removes through remove_token', async () => {
    host.tokens.set('qwen:default', { access_token: 'x', expiry: 1 });
    await tokens.removeToken('qwen');
    expect(host.tokens.size).toBe(0);
    expect(seen()).toEqual([['remove_token', { provider: 'qwen' }]]);
  });

  it('never returns a refresh token, and refuses a malformed token answer', async () => {
    host.failures.set('get_token', { data: { ...TOKEN } });
    const got = await tokens.getToken('anthropic');
    expect(got).toEqual(SANITIZED);
    expect(got).not.toHaveProperty('refresh_token');

    host.failures.set('get_token', { data: { expiry: 5 } });
    const err = await failure(tokens.getToken('anthropic'));
    expect(err.code).toBe('INTERNAL_ERROR');
    expect(err.message).toContain('get_token');
  });

  it('lists providers and buckets', async () => {
    host.tokens.set('a:default', { access_token: 'x', expiry: 1 });
    host.tokens.set('b:ci', { access_token: 'x', expiry: 1 });
    host.tokens.set('b:dev', { access_token: 'x', expiry: 1 });
    await expect(tokens.listProviders()).resolves.toEqual(['a', 'b']);
    await expect(tokens.listBuckets('b')).resolves.toEqual(['ci', 'dev']);
    expect(seen()).toEqual([
      ['list_providers', {}],
      ['list_buckets', { provider: 'b' }],
    ]);
    host.failures.set('list_providers', { data: { providers: 'a' } });
    expect((await failure(tokens.listProviders())).code).toBe('INTERNAL_ERROR');
  });

  it('refreshToken asks the host to refresh', async () => {
    host.tokens.set('codex:default', { access_token: 'old', expiry: 1 });
    await expect(tokens.refreshToken('codex')).resolves.toEqual({ access_token: 'refreshed', expiry: 1 });
    expect(seen()).toEqual([['refresh_token', { provider: 'codex' }]]);
  });

  it('getBucketStats is a get_token round trip', async () => {
    host.tokens.set('a:b1', { access_token: 'x', expiry: 1 });
    await expect(tokens.getBucketStats('a', 'b1')).resolves.toEqual({ bucket: 'b1', requestCount: 0, percentage: 0 });
    await expect(tokens.getBucketStats('a', 'b2')).resolves.toBeNull();
    expect(seen()).toEqual([
      ['get_token', { provider: 'a', bucket: 'b1' }],
      ['get_token', { provider: 'a', bucket: 'b2' }],
    ]);
  });

  it('lock methods are local: acquire returns true, nothing is sent', async () => {
    await expect(tokens.acquireRefreshLock('a', { bucket: 'b', waitMs: 1000 })).resolves.toBe(true);
    await expect(tokens.acquireRefreshLock('a')).resolves.toBe(true);
    await expect(tokens.releaseRefreshLock('a', 'b')).resolves.toBeUndefined();
    expect(proxy.connections).toHaveLength(0);
  });

  it('rejects bad names and tokens with INVALID_REQUEST before any round trip', async () => {
    const attempts: Array<Promise<unknown>> = [
      tokens.getToken('bad/provider'),
      tokens.getToken('ok', 'bad/bucket'),
      tokens.saveToken('ok', { access_token: '', expiry: 1 }),
      tokens.saveToken('ok', null as unknown as OAuthToken),
      tokens.removeToken('x'.repeat(65)),
      tokens.listBuckets(''),
      tokens.getBucketStats('a:b', 'c'),
      tokens.acquireRefreshLock('a b'),
      tokens.refreshToken('ok', '*'),
    ];
    for (const attempt of attempts) expect((await failure(attempt)).code).toBe('INVALID_REQUEST');
    expect(proxy.connections).toHaveLength(0);
  });

  const ERRORS: Array<{ code: string; retryAfter?: number }> = [
    { code: 'UNAUTHORIZED' },
    { code: 'RATE_LIMITED', retryAfter: 7 },
    { code: 'INTERNAL_ERROR' },
    { code: 'REAUTH_REQUIRED' },
  ];
  const METHODS: Array<[string, string, () => Promise<unknown>]> = [
    ['getToken', 'get_token', () => tokens.getToken('p', 'b')],
    ['saveToken', 'save_token', () => tokens.saveToken('p', SANITIZED as OAuthToken)],
    ['removeToken', 'remove_token', () => tokens.removeToken('p')],
    ['listProviders', 'list_providers', () => tokens.listProviders()],
    ['listBuckets', 'list_buckets', () => tokens.listBuckets('p')],
    ['getBucketStats', 'get_token', () => tokens.getBucketStats('p', 'b')],
    ['refreshToken', 'refresh_token', () => tokens.refreshToken('p')],
  ];
  for (const [method, op, call] of METHODS) {
    it(`${method} throws errors naming the code (and the wait) for every failure`, async () => {
      for (const { code, retryAfter } of ERRORS) {
        host.failures.set(op, { code, error: `host says ${code.toLowerCase()}`, ...(retryAfter === undefined ? {} : { retryAfter }) });
        const err = await failure(call());
        expect(err.code).toBe(code);
        expect(err.message).toContain(code);
        expect(err.message).toContain(op);
        expect(err.message).toContain(`host says ${code.toLowerCase()}`);
        expect(err.retryAfter).toBe(retryAfter);
        if (retryAfter !== undefined) expect(err.message).toContain(`retry after ${retryAfter} s`);
      }
    });
  }

  it('NOT_FOUND from a list op is an error, not an empty answer', async () => {
    host.failures.set('list_buckets', { code: 'NOT_FOUND', error: 'no such provider' });
    const err = await failure(tokens.listBuckets('p'));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain('NOT_FOUND');
  });

  it('passes a lost connection through with the exact message', async () => {
    host.failures.set('get_token', null);
    const pending = failure(tokens.getToken('p'));
    const conn = await proxy.connection(0);
    await conn.waitForRequests(1);
    conn.destroy();
    const err = await pending;
    expect([err.code, err.message]).toEqual(['CONNECTION_LOST', CONNECTION_LOST_MESSAGE]);
    const later = await failure(keys.listKeys());
    expect(later.message).toBe(CONNECTION_LOST_MESSAGE);
  });
});

describe('ProxyKeyStore', () => {
  it('getKey reads through get_api_key; NOT_FOUND is null', async () => {
    host.keys.set('openai', 'sk-value');
    await expect(keys.getKey('openai')).resolves.toBe('sk-value');
    await expect(keys.getKey('missing')).resolves.toBeNull();
    expect(seen()).toEqual([
      ['get_api_key', { name: 'openai' }],
      ['get_api_key', { name: 'missing' }],
    ]);
  });

  it('listKeys and hasKey use list_api_keys, so hasKey moves no key value', async () => {
    host.keys.set('openai', 'sk-secret-value');
    host.keys.set('groq', 'gsk');
    await expect(keys.listKeys()).resolves.toEqual(['groq', 'openai']);
    await expect(keys.hasKey('openai')).resolves.toBe(true);
    await expect(keys.hasKey('anthropic')).resolves.toBe(false);
    expect(seen().map(([op]) => op)).toEqual(['list_api_keys', 'list_api_keys', 'list_api_keys']);
  });

  it('translates errors naming the code', async () => {
    host.failures.set('get_api_key', { code: 'UNAUTHORIZED', error: 'key not allowed' });
    const denied = await failure(keys.getKey('openai'));
    expect(denied.code).toBe('UNAUTHORIZED');
    expect(denied.message).toMatch(/get_api_key openai failed: UNAUTHORIZED: key not allowed/);
    host.failures.set('list_api_keys', { code: 'RATE_LIMITED', error: 'slow', retryAfter: 2 });
    for (const attempt of [keys.listKeys(), keys.hasKey('x')]) {
      const limited = await failure(attempt);
      expect([limited.code, limited.retryAfter]).toEqual(['RATE_LIMITED', 2]);
      expect(limited.message).toContain('RATE_LIMITED (retry after 2 s)');
    }
    host.failures.set('get_api_key', { data: { key: 42 } });
    expect((await failure(keys.getKey('openai'))).code).toBe('INTERNAL_ERROR');
  });

  it('refuses saveKey and deleteKey locally with the sandbox message', async () => {
    for (const attempt of [keys.saveKey('openai', 'sk-new'), keys.deleteKey('openai')]) {
      const err = await failure(attempt);
      expect(err.message).toBe('API key management is not available in sandbox mode. Manage keys on the host.');
    }
    expect(KEY_MANAGEMENT_UNAVAILABLE).toBe('API key management is not available in sandbox mode. Manage keys on the host.');
    expect(proxy.connections).toHaveLength(0);
  });

  it('rejects bad key names before any round trip', async () => {
    for (const attempt of [keys.getKey('has space'), keys.hasKey('a@b'), keys.getKey('')]) {
      expect((await failure(attempt)).code).toBe('INVALID_REQUEST');
    }
    expect(proxy.connections).toHaveLength(0);
  });
});
