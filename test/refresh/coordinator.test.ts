import { afterEach, describe, expect, it } from 'vitest';
import { CredproxyError, isCredproxyError } from '../../src/errors.js';
import { sleep } from '../../src/refresh/clock.js';
import { MemoryCooldownStore } from '../../src/refresh/cooldown.js';
import { RefreshCoordinator, type RefreshCoordinatorOptions } from '../../src/refresh/coordinator.js';
import type { OAuthToken } from '../../src/store/types.js';
import { MemoryTokenStore } from '../support/memory-stores.js';
import { FakeClock } from './fake-clock.js';
import { capturingLogger, FakeProvider, FakeProviders, hang, rejected, revoked, transient } from './fakes.js';

interface Setup {
  clock: FakeClock;
  store: MemoryTokenStore;
  cooldown: MemoryCooldownStore;
  provider: FakeProvider;
  coordinator: RefreshCoordinator;
  nowSec: () => number;
  log: () => string;
}

const open: RefreshCoordinator[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

function setup(options: Partial<RefreshCoordinatorOptions> = {}): Setup {
  const clock = new FakeClock();
  const store = new MemoryTokenStore();
  const cooldown = new MemoryCooldownStore();
  const provider = new FakeProvider('p', clock);
  const { logger, output } = capturingLogger();
  const coordinator = new RefreshCoordinator({
    store,
    providers: new FakeProviders(provider),
    cooldown,
    clock,
    timers: clock,
    logger,
    scheduler: { random: () => 0 },
    ...options,
  });
  open.push(coordinator);
  return { clock, store, cooldown, provider, coordinator, nowSec: () => Math.floor(clock.now() / 1000), log: output };
}

async function caught(p: Promise<unknown>): Promise<CredproxyError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CredproxyError) return err;
    throw err;
  }
  throw new Error('call succeeded');
}

function stored(s: Setup, expiresIn: number, extra: Partial<OAuthToken> = {}): OAuthToken {
  return { access_token: 'at-old', expiry: s.nowSec() + expiresIn, token_type: 'Bearer', refresh_token: 'rt-old-secret', account_id: 'acct-1', ...extra };
}

describe('getToken', () => {
  it('answers null when nothing is stored', async () => {
    const s = setup();
    await expect(s.coordinator.getToken('p', 'default')).resolves.toBeNull();
  });

  it('serves a valid token as is and arms its renewal timer', async () => {
    const s = setup();
    const token = stored(s, 3600);
    await s.store.saveToken('p', token);
    await expect(s.coordinator.getToken('p', 'default')).resolves.toEqual(token);
    expect(s.provider.calls).toEqual([]);
    expect(s.coordinator.scheduler.isArmed('p', 'default')).toBe(true);
  });

  it('refreshes a token expiring within 60 s and merges the answer into the stored token', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 59));
    s.provider.behaviours.push(async () => ({ access_token: 'at-new', expiry: s.nowSec() + 3600, token_type: 'Bearer', scope: 'a b' }));
    const fresh = await s.coordinator.getToken('p', 'default');
    const expected = { access_token: 'at-new', expiry: s.nowSec() + 3600, token_type: 'Bearer', refresh_token: 'rt-old-secret', account_id: 'acct-1', scope: 'a b' };
    expect(fresh).toEqual(expected);
    expect(await s.store.getToken('p')).toEqual(expected);
    expect(s.provider.calls).toEqual([{ at: s.clock.now(), refreshToken: 'rt-old-secret' }]);
    expect(await s.cooldown.lastRefresh('p', 'default')).toBe(s.clock.now());
  });

  it('does not refresh a token with more than 60 s left', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 61));
    await s.coordinator.getToken('p', 'default');
    expect(s.provider.calls).toEqual([]);
  });

  it('serves the still-valid token when its refresh fails for a non-revocation reason', async () => {
    const s = setup({ retryDelaysMs: [] });
    const token = stored(s, 30);
    await s.store.saveToken('p', token);
    s.provider.behaviours.push(rejected('invalid_client'));
    await expect(s.coordinator.getToken('p', 'default')).resolves.toEqual(token);
    expect(s.log()).toContain('refresh failed; serving the still-valid token');
  });

  it('answers REAUTH_REQUIRED for an expired token that cannot be refreshed, serves it while valid', async () => {
    const s = setup();
    const noRefresh = stored(s, 30, { refresh_token: undefined });
    await s.store.saveToken('p', noRefresh);
    await expect(s.coordinator.getToken('p', 'default')).resolves.toEqual(noRefresh);
    await s.clock.advance(31_000);
    const err = await caught(s.coordinator.getToken('p', 'default'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toContain('log in again with `credproxy login p`');
  });

  it('serves tokens of unconfigured providers while valid and explains when they expire', async () => {
    const s = setup();
    const token = stored(s, 30);
    await s.store.saveToken('imported', token);
    await expect(s.coordinator.getToken('imported', 'default')).resolves.toEqual(token);
    expect(s.coordinator.scheduler.isArmed('imported', 'default')).toBe(false);
    await s.clock.advance(31_000);
    const err = await caught(s.coordinator.getToken('imported', 'default'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toContain('credproxy token import imported');
  });
});

describe('refresh', () => {
  it('refreshes even a still-valid token', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    const fresh = await s.coordinator.refresh('p', 'default');
    expect(fresh.access_token).toBe('at-p-1');
    expect(fresh.refresh_token).toBe('rt-p-1-secret');
    expect(s.provider.calls.length).toBe(1);
  });

  it('answers NOT_FOUND, PROVIDER_NOT_FOUND and INVALID_REQUEST before doing anything', async () => {
    const s = setup();
    expect((await caught(s.coordinator.refresh('p', 'default'))).code).toBe('NOT_FOUND');
    await s.store.saveToken('other', stored(s, 10));
    expect((await caught(s.coordinator.refresh('other', 'default'))).code).toBe('PROVIDER_NOT_FOUND');
    expect((await caught(s.coordinator.refresh('bad name', 'default'))).code).toBe('INVALID_REQUEST');
    expect((await caught(s.coordinator.getToken('p', 'bad/bucket'))).code).toBe('INVALID_REQUEST');
    expect(s.provider.calls).toEqual([]);
  });

  it('answers REAUTH_REQUIRED for a token without refresh token before any cooldown check', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -10, { refresh_token: undefined }), 'work');
    await s.cooldown.recordRefresh('p', 'work', s.clock.now());
    const err = await caught(s.coordinator.refresh('p', 'work'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toContain('`credproxy login p --bucket work`');
  });

  it('retries transient failures after 1 s and 3 s', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    s.provider.behaviours.push(transient(), transient());
    const result = s.coordinator.refresh('p', 'default');
    await s.clock.advance(1000);
    await s.clock.advance(3000);
    expect((await result).access_token).toBe('at-p-3');
    const times = s.provider.calls.map((c) => c.at - s.provider.calls[0]!.at);
    expect(times).toEqual([0, 1000, 4000]);
  });

  it('gives up after two retries with the provider-unavailable message and starts no cooldown', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -5));
    s.provider.behaviours.push(transient(), transient(), transient());
    const result = caught(s.coordinator.refresh('p', 'default'));
    await s.clock.advance(5000);
    const err = await result;
    expect([err.code, err.message]).toEqual(['INTERNAL_ERROR', 'p refresh failed: provider unavailable (HTTP 503)']);
    expect(s.provider.calls.length).toBe(3);
    expect(await s.cooldown.lastRefresh('p', 'default')).toBeNull();
    // No cooldown: the next attempt reaches the provider at once.
    await expect(s.coordinator.refresh('p', 'default')).resolves.toMatchObject({ access_token: 'at-p-4' });
  });

  it('keeps every attempt and delay inside the 30 s budget', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -5));
    const slowFailure = async (): Promise<OAuthToken> => {
      await sleep(s.clock, 14_000);
      throw new (await import('../../src/oauth/errors.js')).ProviderError('transient', 'p refresh failed: no answer within 15 s');
    };
    s.provider.behaviours.push(slowFailure, slowFailure, slowFailure);
    const result = caught(s.coordinator.refresh('p', 'default'));
    await s.clock.advance(40_000);
    const err = await result;
    expect(err.message).toBe('p refresh failed: no answer within 15 s');
    // 0-14 s, 1 s pause, 15-29 s; a 3 s pause would end past 30 s.
    expect(s.provider.calls.map((c) => c.at - s.provider.calls[0]!.at)).toEqual([0, 15_000]);
  });

  it('abandons a provider call that outlives the budget and releases the lock', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -5));
    s.provider.behaviours.push(hang);
    const result = caught(s.coordinator.refresh('p', 'default'));
    await s.clock.advance(30_000);
    const err = await result;
    expect([err.code, err.message]).toEqual(['INTERNAL_ERROR', 'refresh of the p token did not finish within 30 s']);
    await expect(s.store.acquireRefreshLock('p', { bucket: 'default' })).resolves.toBe(true);
  });

  it('never retries other 4xx answers and changes nothing', async () => {
    const s = setup();
    const token = stored(s, -5);
    await s.store.saveToken('p', token);
    s.provider.behaviours.push(rejected('invalid_client'));
    const err = await caught(s.coordinator.refresh('p', 'default'));
    expect([err.code, err.message]).toEqual(['INTERNAL_ERROR', 'p refresh failed: invalid_client']);
    expect(s.provider.calls.length).toBe(1);
    expect(await s.store.getToken('p')).toEqual(token);
  });

  it('clears only the refresh token on invalid_grant and asks for a new login', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    await s.coordinator.getToken('p', 'default');
    expect(s.coordinator.scheduler.isArmed('p', 'default')).toBe(true);
    s.provider.behaviours.push(revoked());
    const err = await caught(s.coordinator.refresh('p', 'default'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toContain('log in again with `credproxy login p`');
    expect(s.provider.calls.length).toBe(1);
    const after = await s.store.getToken('p');
    expect(after).toEqual({ access_token: 'at-old', expiry: s.nowSec() + 3600, token_type: 'Bearer', account_id: 'acct-1' });
    expect(s.coordinator.scheduler.isArmed('p', 'default')).toBe(false);
    expect((await caught(s.coordinator.refresh('p', 'default'))).code).toBe('REAUTH_REQUIRED');
    expect(s.provider.calls.length).toBe(1);
  });

  it('shares one upstream call among concurrent callers', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 10));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    s.provider.behaviours.push(async (_t, _s, n) => {
      await gate;
      return s.provider.issue(n);
    });
    const callers = [
      ...Array.from({ length: 20 }, () => s.coordinator.refresh('p', 'default')),
      ...Array.from({ length: 20 }, () => s.coordinator.getToken('p', 'default')),
    ];
    await s.clock.flush();
    release();
    const results = await Promise.all(callers);
    expect(s.provider.calls.length).toBe(1);
    expect(new Set(results.map((r) => r!.access_token))).toEqual(new Set(['at-p-1']));
  });
});

describe('cooldown', () => {
  it('returns a valid token as is, and RATE_LIMITED with the seconds left for an expired one', async () => {
    const s = setup();
    s.provider.lifetimeSeconds = 20;
    await s.store.saveToken('p', stored(s, 3600));
    const first = await s.coordinator.refresh('p', 'default');
    await s.clock.advance(10_000);
    await expect(s.coordinator.refresh('p', 'default')).resolves.toEqual(first);
    expect(s.provider.calls.length).toBe(1);
    await s.clock.advance(15_000); // 25 s after the refresh; the 20 s token has expired
    const err = await caught(s.coordinator.getToken('p', 'default'));
    expect([err.code, err.retryAfter]).toEqual(['RATE_LIMITED', 5]);
    await s.clock.advance(5_000);
    await expect(s.coordinator.getToken('p', 'default')).resolves.toMatchObject({ access_token: 'at-p-2' });
  });

  it('honours a refresh recorded by another process', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -1));
    await s.cooldown.recordRefresh('p', 'default', s.clock.now() - 12_500);
    const err = await caught(s.coordinator.refresh('p', 'default'));
    expect([err.code, err.retryAfter]).toEqual(['RATE_LIMITED', 18]);
    expect(s.provider.calls).toEqual([]);
  });
});

describe('lock and re-read', () => {
  it('uses the token another process refreshed while we waited for the lock', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 10));
    await s.store.acquireRefreshLock('p', { bucket: 'default' });
    const result = s.coordinator.getToken('p', 'default');
    await s.clock.flush();
    const elsewhere = { access_token: 'at-elsewhere', expiry: s.nowSec() + 3600, refresh_token: 'rt-elsewhere-secret' };
    await s.store.saveToken('p', elsewhere);
    await s.store.releaseRefreshLock('p', 'default');
    await expect(result).resolves.toEqual(elsewhere);
    expect(s.provider.calls).toEqual([]);
  });

  it('stops a refresh whose re-read finds the token removed (logout won the lock)', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 10));
    await s.store.acquireRefreshLock('p', { bucket: 'default' });
    const result = caught(s.coordinator.refresh('p', 'default'));
    await s.clock.flush();
    await s.store.removeToken('p');
    await s.store.releaseRefreshLock('p', 'default');
    const err = await result;
    expect(err.code).toBe('NOT_FOUND');
    expect(s.provider.calls).toEqual([]);
    expect(await s.store.getToken('p')).toBeNull();
  });

  it('makes remove() wait for a running refresh, then win', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 10));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    s.provider.behaviours.push(async (_t, _s, n) => {
      await gate;
      return s.provider.issue(n);
    });
    const refreshing = s.coordinator.refresh('p', 'default');
    await s.clock.flush();
    let removed = false;
    const removing = s.coordinator.remove('p', 'default').then(() => (removed = true));
    await s.clock.flush();
    expect(removed).toBe(false);
    release();
    await refreshing;
    await removing;
    expect(await s.store.getToken('p')).toBeNull();
    expect(s.coordinator.scheduler.isArmed('p', 'default')).toBe(false);
    expect(await s.cooldown.lastRefresh('p', 'default')).toBeNull();
  });
});

describe('save (the save_token op)', () => {
  it('waits for a running refresh and merges into the token it stored, keeping the rotated refresh token', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    s.provider.behaviours.push(async (_t, _s, n) => {
      await gate;
      return s.provider.issue(n);
    });
    const refreshing = s.coordinator.refresh('p', 'default');
    await s.clock.flush();
    let saved = false;
    const saving = s.coordinator.save('p', 'default', { access_token: 'at-from-sandbox', expiry: s.nowSec() + 600 }).then(() => (saved = true));
    await s.clock.flush();
    expect(saved).toBe(false);
    release();
    const fresh = await refreshing;
    await saving;
    const now = await s.store.getToken('p');
    expect(fresh.refresh_token).not.toBe('rt-old-secret');
    expect(now).toMatchObject({ access_token: 'at-from-sandbox', refresh_token: fresh.refresh_token, account_id: 'acct-1' });
  });

  it('gives up with LOCK_FAILED when the lock stays taken', async () => {
    const s = setup({ removeLockWaitMs: 0 });
    await s.store.saveToken('p', stored(s, 3600));
    await s.store.acquireRefreshLock('p', { bucket: 'default' });
    expect((await caught(s.coordinator.save('p', 'default', { access_token: 'x', expiry: s.nowSec() + 60 }))).code).toBe('LOCK_FAILED');
    expect(await s.store.getToken('p')).toMatchObject({ access_token: 'at-old' });
  });
});

describe('renewal timers', () => {
  it('renews a served token before it expires and re-arms for the new one', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    await s.coordinator.getToken('p', 'default');
    const due = s.coordinator.scheduler.nextFireAt('p', 'default')!;
    expect(due).toBe((s.nowSec() + 3600 - 360) * 1000);
    await s.clock.advance(due - s.clock.now());
    expect(s.provider.calls.length).toBe(1);
    const now = await s.store.getToken('p');
    expect(now!.access_token).toBe('at-p-1');
    expect(s.coordinator.scheduler.nextFireAt('p', 'default')).toBe((now!.expiry - 360) * 1000);
  });

  it('is not armed at start-up or by a save, only by serving', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, 3600));
    expect(s.coordinator.scheduler.size).toBe(0);
    await s.clock.advance(2 * 3600_000);
    expect(s.provider.calls).toEqual([]);
  });
});

describe('close', () => {
  it('cancels in-flight work, stops timers and refuses new calls', async () => {
    const s = setup();
    await s.store.saveToken('p', stored(s, -5));
    await s.store.saveToken('p', stored(s, 3600), 'other');
    await s.coordinator.getToken('p', 'other');
    s.provider.behaviours.push(hang);
    const result = caught(s.coordinator.refresh('p', 'default'));
    await s.clock.flush();
    await s.coordinator.close();
    const err = await result;
    expect(err.message).toContain('shutting down');
    expect(s.coordinator.scheduler.size).toBe(0);
    expect(s.clock.pending()).toBe(0);
    expect(isCredproxyError(await caught(s.coordinator.getToken('p', 'other')), 'INTERNAL_ERROR')).toBe(true);
    await expect(s.store.acquireRefreshLock('p', { bucket: 'default' })).resolves.toBe(true);
  });
});

describe('secrets', () => {
  it('never logs a refresh token or puts one in an error message', async () => {
    const s = setup();
    const messages: string[] = [];
    const collect = async (p: Promise<unknown>): Promise<void> => {
      await p.catch((err: Error) => messages.push(err.message, JSON.stringify(err)));
    };
    await s.store.saveToken('p', stored(s, 10));
    await collect(s.coordinator.getToken('p', 'default')); // success, rotated
    await s.clock.advance(31_000);
    s.provider.behaviours.push(transient(), rejected('invalid_client'));
    const retried = collect(s.coordinator.refresh('p', 'default'));
    await s.clock.advance(2000);
    await retried;
    // Past the pause that follows a refusal, so the provider is asked again.
    await s.clock.advance(31_000);
    s.provider.behaviours.push(revoked());
    await collect(s.coordinator.refresh('p', 'default'));
    const secrets = ['rt-old-secret', 'rt-p-1-secret'];
    expect(s.log()).toContain('token refreshed');
    expect(s.log()).toContain('refresh token revoked');
    expect(messages.length).toBeGreaterThan(0);
    for (const secret of secrets) {
      expect(s.log()).not.toContain(secret);
      for (const m of messages) expect(m).not.toContain(secret);
    }
  });
});
