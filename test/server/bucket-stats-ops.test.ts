import { afterEach, describe, expect, it } from 'vitest';
import type { OAuthToken } from '../../src/store/types.js';
import { SimpleCredentials } from '../support/simple-credentials.js';
import { startHarness, type Harness, type SpyTokenStore } from './helpers.js';

/** Refresh answers the stored token as if the provider had renewed it. */
class RefreshingCredentials extends SimpleCredentials {
  constructor(private readonly store: SpyTokenStore) {
    super(store);
  }
  override async refresh(provider: string, bucket: string): Promise<OAuthToken> {
    return (await this.store.inner.getToken(provider, bucket))!;
  }
}

const token = (at: string): OAuthToken => ({ access_token: at, expiry: 2_000_000_000, refresh_token: 'rt-never-on-the-wire' });

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('get_bucket_stats', () => {
  it('answers the server’s own served-token counters, per bucket and as a share of the provider', async () => {
    h = await startHarness({ credentials: (tokens) => new RefreshingCredentials(tokens) });
    await h.tokens.inner.saveToken('anthropic', token('a'));
    await h.tokens.inner.saveToken('anthropic', token('w'), 'work');
    await h.tokens.inner.saveToken('gemini', token('g'));
    const c = await h.client();
    expect(await c.request('get_bucket_stats', { provider: 'anthropic', bucket: 'default' })).toMatchObject({
      ok: true,
      data: { bucket: 'default', requestCount: 0, percentage: 0 },
    });
    expect(((await c.request('get_bucket_stats', { provider: 'anthropic' })).data as object)).not.toHaveProperty('lastUsed');
    const before = Date.now();
    for (let i = 0; i < 3; i++) expect(await c.request('get_token', { provider: 'anthropic' })).toMatchObject({ ok: true });
    expect(await c.request('get_token', { provider: 'anthropic', bucket: 'work' })).toMatchObject({ ok: true });
    expect(await c.request('refresh_token', { provider: 'gemini' })).toMatchObject({ ok: true });
    // A request that found nothing is not a served one.
    expect(await c.request('get_token', { provider: 'anthropic', bucket: 'empty' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    const def = await c.request('get_bucket_stats', { provider: 'anthropic', bucket: 'default' });
    expect(def).toMatchObject({ ok: true, data: { bucket: 'default', requestCount: 3, percentage: 75 } });
    const lastUsed = (def.data as { lastUsed: number }).lastUsed;
    expect(lastUsed).toBeGreaterThanOrEqual(before);
    expect(lastUsed).toBeLessThanOrEqual(Date.now());
    expect(await c.request('get_bucket_stats', { provider: 'anthropic', bucket: 'work' })).toMatchObject({
      ok: true,
      data: { bucket: 'work', requestCount: 1, percentage: 25 },
    });
    expect(await c.request('get_bucket_stats', { provider: 'gemini' })).toMatchObject({ ok: true, data: { requestCount: 1, percentage: 100 } });
    expect(c.receivedText).not.toContain('rt-never-on-the-wire');
  });

  it('is NOT_FOUND when nothing is stored, and checked like get_token: schema, then policy, before any store access', async () => {
    h = await startHarness({ policy: { allowAll: false, allow: ['anthropic'] } });
    await h.tokens.inner.saveToken('anthropic', token('a'), 'other');
    const c = await h.client();
    expect(await c.request('get_bucket_stats', { provider: 'anthropic' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    const calls = h.tokens.calls;
    expect(await c.request('get_bucket_stats', { provider: 'anthropic', bucket: 'other' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_bucket_stats', { provider: 'gemini' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_bucket_stats', { provider: 'a/b' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('get_bucket_stats', { provider: 'anthropic', bucket: '../x' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('get_bucket_stats', {})).toMatchObject({ ok: false, code: 'INVALID_REQUEST', error: 'missing provider' });
    expect(h.tokens.calls).toBe(calls);
    await h.server.stop(); // flushes the audit log
    const audit = await h.auditLines();
    // The served request has its own line; refusals before any store are aggregated per second.
    expect(audit.filter((l) => l.op === 'get_bucket_stats').map((l) => l.result)).toEqual(['NOT_FOUND']);
    const refused = audit.filter((l) => l.op === 'refused');
    const sum = (key: 'refused' | 'ops', name: string): number => refused.reduce((n, l) => n + (((l as Record<string, unknown>)[key] as Record<string, number> | undefined)?.[name] ?? 0), 0);
    expect(sum('ops', 'get_bucket_stats')).toBe(5);
    expect(sum('refused', 'UNAUTHORIZED')).toBe(2);
    expect(sum('refused', 'INVALID_REQUEST')).toBe(3);
  });

  it('counts restart at zero when the token is removed', async () => {
    h = await startHarness();
    await h.tokens.inner.saveToken('qwen', token('q'));
    const c = await h.client();
    await c.request('get_token', { provider: 'qwen' });
    expect(await c.request('remove_token', { provider: 'qwen' })).toMatchObject({ ok: true });
    expect(await c.request('save_token', { provider: 'qwen', token: { access_token: 'q2', expiry: 2_000_000_000 } })).toMatchObject({ ok: true });
    expect(await c.request('get_bucket_stats', { provider: 'qwen' })).toMatchObject({ ok: true, data: { requestCount: 0, percentage: 0 } });
  });
});

describe('has_api_key', () => {
  it('answers whether an allowed key exists, never its value; UNAUTHORIZED outside the policy', async () => {
    h = await startHarness({ policy: { allowAll: false, keys: ['openai', 'absent'] } });
    await h.keys.inner.saveKey('openai', 'sk-VALUE-never-sent');
    await h.keys.inner.saveKey('secret', 'sk-OTHER');
    const c = await h.client();
    expect(await c.request('has_api_key', { name: 'openai' })).toMatchObject({ ok: true, data: { exists: true } });
    expect(await c.request('has_api_key', { name: 'absent' })).toMatchObject({ ok: true, data: { exists: false } });
    const calls = h.keys.calls;
    // Outside the policy the answer must not depend on whether the key exists.
    expect(await c.request('has_api_key', { name: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('has_api_key', { name: 'nothing' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('has_api_key', { name: 'a b' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(h.keys.calls).toBe(calls);
    expect(c.receivedText).not.toContain('sk-');
  });
});
