import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CredproxyError } from '../../src/errors.js';
import { ProviderRegistry } from '../../src/oauth/index.js';
import { FileCooldownStore } from '../../src/refresh/cooldown.js';
import { RefreshCoordinator, type RefreshCoordinatorOptions } from '../../src/refresh/coordinator.js';
import type { OAuthToken } from '../../src/store/types.js';
import { MemoryTokenStore } from '../support/memory-stores.js';
import { NATIVE_CLIENT_ID, OidcTestServer } from '../support/oidc-server.js';
import { capturingLogger } from './fakes.js';

/** Every refresh token seen in this file; none may ever show up in a log line or an error message. */
const secrets = new Set<string>();
const messages: string[] = [];
const logs: Array<() => string> = [];

let server: OidcTestServer;
let stateDir: string;
let store: MemoryTokenStore;
const coordinators: RefreshCoordinator[] = [];

beforeAll(async () => {
  server = await OidcTestServer.start({ accessTokenTtlSeconds: 600 });
});
afterAll(async () => {
  await server.close();
  const allLogs = logs.map((l) => l()).join('\n');
  expect(allLogs).toContain('token refreshed');
  for (const secret of secrets) {
    expect(allLogs).not.toContain(secret);
    for (const m of messages) expect(m).not.toContain(secret);
  }
});
beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'credproxy-refresh-'));
  store = new MemoryTokenStore();
  server.tokenDelayMs = 0;
});
afterEach(async () => {
  await Promise.all(coordinators.splice(0).map((c) => c.close()));
  for (const t of store.tokens.values()) if (t.refresh_token) secrets.add(t.refresh_token);
  await rm(stateDir, { recursive: true, force: true });
});

function coordinator(target: OidcTestServer = server, options: Partial<RefreshCoordinatorOptions> = {}): RefreshCoordinator {
  const { logger, output } = capturingLogger();
  logs.push(output);
  const c = new RefreshCoordinator({
    store,
    providers: new ProviderRegistry({ config: { providers: { corp: { flow: 'pkce_redirect', issuer: target.issuer, client_id: NATIVE_CLIENT_ID } } } }),
    cooldown: FileCooldownStore.inStateDir(stateDir),
    logger,
    ...options,
  });
  coordinators.push(c);
  return c;
}

/** A real login; the token is stored as credproxy would store it, optionally with a different expiry. */
async function login(target: OidcTestServer = server, expiresIn?: number): Promise<OAuthToken> {
  const set = await target.issueTokens();
  secrets.add(set.refresh_token!);
  const { expires_in, ...rest } = set;
  const token: OAuthToken = { ...rest, expiry: Math.floor(Date.now() / 1000) + (expiresIn ?? expires_in ?? 0) };
  await store.saveToken('corp', token);
  return token;
}

async function failure(p: Promise<unknown>): Promise<CredproxyError> {
  try {
    await p;
  } catch (err) {
    if (!(err instanceof CredproxyError)) throw err;
    messages.push(err.message);
    return err;
  }
  throw new Error('call succeeded');
}

describe('refresh against a real authorization server', () => {
  it('refreshes an expired token on getToken and stores the rotated refresh token', async () => {
    const before = await login(server, -10);
    const successes = server.refreshSuccesses;
    const c = coordinator();
    const served = await c.getToken('corp', 'default');
    expect(server.refreshSuccesses).toBe(successes + 1);
    expect(served!.access_token).not.toBe(before.access_token);
    expect(served!.expiry).toBeGreaterThan(Date.now() / 1000 + 590);
    const saved = await store.getToken('corp');
    expect(saved).toEqual(served);
    expect(saved!.refresh_token).not.toBe(before.refresh_token);
    expect(c.scheduler.isArmed('corp', 'default')).toBe(true);
  });

  it('turns 100 concurrent refresh calls into one refresh grant, and the grant stays usable', async () => {
    await login();
    const successes = server.refreshSuccesses;
    const c = coordinator(server, { cooldownMs: 300 });
    const results = await Promise.all(Array.from({ length: 100 }, () => c.refresh('corp', 'default')));
    expect(server.refreshSuccesses).toBe(successes + 1);
    expect(new Set(results.map((r) => r.access_token)).size).toBe(1);
    await new Promise((r) => setTimeout(r, 350));
    const later = await c.refresh('corp', 'default');
    expect(later.access_token).not.toBe(results[0]!.access_token);
    expect(server.refreshSuccesses).toBe(successes + 2);
    expect(server.refreshErrors).toBe(0);
  });

  it('clears the refresh token of a grant revoked at the server and asks for a new login', async () => {
    const token = await login();
    await server.revoke(token.refresh_token!);
    const errors = server.refreshErrors;
    const err = await failure(coordinator().refresh('corp', 'default'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toContain('log in again with `credproxy login corp`');
    expect(server.refreshErrors).toBe(errors + 1);
    const { refresh_token: _gone, ...rest } = token;
    expect(await store.getToken('corp')).toEqual(rest);
  });

  it('treats a refresh token rotated by another client as revoked', async () => {
    const token = await login();
    const elsewhere = await server.refreshDirect(token.refresh_token!);
    secrets.add(elsewhere.refresh_token!);
    const err = await failure(coordinator().refresh('corp', 'default'));
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect((await store.getToken('corp'))!.refresh_token).toBeUndefined();
  });

  it('holds the 30 s cooldown across coordinators sharing the store and state dir', async () => {
    await login();
    const successes = server.refreshSuccesses;
    const first = coordinator();
    const refreshed = await first.refresh('corp', 'default');
    // Still valid inside the cooldown: returned as is, no grant.
    await expect(first.refresh('corp', 'default')).resolves.toEqual(refreshed);
    // Another process (own coordinator, same store and state dir) sees the expired token...
    await store.saveToken('corp', { ...refreshed, expiry: Math.floor(Date.now() / 1000) - 1 });
    const err = await failure(coordinator().getToken('corp', 'default'));
    expect(err.code).toBe('RATE_LIMITED');
    expect(err.retryAfter).toBeGreaterThanOrEqual(29);
    expect(err.retryAfter).toBeLessThanOrEqual(30);
    expect(server.refreshSuccesses).toBe(successes + 1);
  });

  it('after a refusal other than revocation (429, invalid_client) a loop of refresh calls does not ask the provider again for a while', async () => {
    const token = await login();
    let offset = 0;
    const c = coordinator(server, { clock: { now: () => Date.now() + offset } });
    const before = server.tokenRequests;
    server.injectTokenResponses({ status: 429, body: JSON.stringify({ error: 'rate_limit_exceeded' }) });
    // What a sandbox looping on refresh_token does: one call after the other, no pause.
    for (let i = 0; i < 50; i++) {
      const err = await failure(c.refresh('corp', 'default'));
      expect([err.code, err.message]).toEqual(['INTERNAL_ERROR', expect.stringContaining('corp refresh failed: rate_limit_exceeded')]);
    }
    expect(server.tokenRequests - before).toBe(1);
    // The stored login is untouched and its still-valid token is served meanwhile.
    expect(await store.getToken('corp')).toEqual(token);
    await expect(c.getToken('corp', 'default')).resolves.toEqual(token);
    expect(server.tokenRequests - before).toBe(1);
    // Once the pause is over, the provider is asked again, and a success ends the pauses.
    offset = 31_000;
    const fresh = await c.refresh('corp', 'default');
    expect(fresh.access_token).not.toBe(token.access_token);
    expect(server.tokenRequests - before).toBe(2);
  });

  it('lets a logout during a slow refresh win', async () => {
    await login();
    server.tokenDelayMs = 600;
    const c = coordinator();
    const order: string[] = [];
    const refreshing = c.refresh('corp', 'default').then((t) => {
      order.push('refresh');
      return t;
    });
    await new Promise((r) => setTimeout(r, 100));
    const removing = c.remove('corp', 'default').then(() => order.push('remove'));
    await Promise.all([refreshing, removing]);
    expect(order).toEqual(['refresh', 'remove']);
    expect(await store.getToken('corp')).toBeNull();
    expect(c.scheduler.isArmed('corp', 'default')).toBe(false);
  });
});

describe('renewal timer with a real short-lived token', () => {
  let shortLived: OidcTestServer;
  beforeAll(async () => {
    shortLived = await OidcTestServer.start({ accessTokenTtlSeconds: 20 });
  });
  afterAll(async () => {
    await shortLived.close();
  });

  it('renews a 20 s token before it expires', async () => {
    const original = await login(shortLived);
    expect(original.expiry - Date.now() / 1000).toBeLessThanOrEqual(20);
    // A 5 s refresh window lets get_token serve the 20 s token (and arm the timer) instead of refreshing it at once.
    const c = coordinator(shortLived, { refreshWindowMs: 5_000, scheduler: { random: () => 0.99 } });
    await expect(c.getToken('corp', 'default')).resolves.toEqual(original);
    const due = c.scheduler.nextFireAt('corp', 'default')!;
    // lead = floor(20 / 2) = 10 s, jitter up to 2 s
    expect(original.expiry * 1000 - due).toBeGreaterThanOrEqual(10_000);
    expect(original.expiry * 1000 - due).toBeLessThanOrEqual(12_000);
    const deadline = Date.now() + 15_000;
    while (shortLived.refreshSuccesses === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(shortLived.refreshSuccesses).toBe(1);
    expect(Date.now() / 1000).toBeLessThan(original.expiry);
    const renewed = await store.getToken('corp');
    expect(renewed!.access_token).not.toBe(original.access_token);
    expect(renewed!.expiry).toBeGreaterThan(original.expiry);
    // Re-armed, but not inside the 30 s cooldown: no loop for a token shorter than the cooldown.
    expect(c.scheduler.nextFireAt('corp', 'default')).toBeGreaterThanOrEqual(Date.now() + 25_000);
  }, 25_000);
});
