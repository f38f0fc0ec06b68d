import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CredproxyError } from '../../src/errors.js';
import { LoginSessionManager, type LoginEvent } from '../../src/login/session-manager.js';
import { ProviderRegistry } from '../../src/oauth/registry.js';
import type { PeerIdentity } from '../../src/server/context.js';
import { MemoryTokenStore } from '../support/memory-stores.js';
import { loginProviders, OidcTestServer } from '../support/oidc-server.js';

/**
 * A sandbox that starts and cancels logins in a loop stays inside the
 * per-sandbox cap of logins in progress, yet each start is a device
 * authorization request from the user's address to the provider and a
 * notice on the host's terminal. Starts are rate-limited per sandbox.
 */
let oidc: OidcTestServer;
beforeAll(async () => {
  oidc = await OidcTestServer.start();
});
afterAll(async () => {
  await oidc.close();
});

const never = new AbortController().signal;

async function codeOf(p: Promise<unknown>): Promise<{ code: string; retryAfter?: number }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CredproxyError) return { code: err.code, ...(err.retryAfter !== undefined ? { retryAfter: err.retryAfter } : {}) };
    throw err;
  }
  return { code: 'OK' };
}

describe('login starts per sandbox', () => {
  it('a start-and-cancel loop reaches the provider and the host terminal a bounded number of times; later starts go through again', async () => {
    let now = Date.now();
    const events: LoginEvent[] = [];
    const manager = new LoginSessionManager({
      tokens: new MemoryTokenStore(),
      providers: new ProviderRegistry({ presets: {}, config: { providers: loginProviders(oidc.issuer) as never } }),
      now: () => now,
      onLogin: (e) => events.push(e),
    });
    const sandbox: PeerIdentity = { connectionId: 1, pid: process.pid, uid: 1000 };
    const deviceCodesBefore = oidc.secretsSeen.size;
    const results: Array<{ code: string; retryAfter?: number }> = [];
    for (let i = 0; i < 100; i++) {
      const peer = { ...sandbox, connectionId: i + 1 };
      const r = await codeOf(
        manager.initiate('dev', 'default', peer, never).then(async (s) => {
          await manager.cancel(s.session_id, peer);
        }),
      );
      results.push(r);
    }
    const started = results.filter((r) => r.code === 'OK').length;
    // A person retrying a login a few times is never refused...
    expect(started).toBeGreaterThanOrEqual(5);
    // ...but a loop is: the provider and the host terminal see a handful of starts, not a hundred.
    expect(started).toBeLessThanOrEqual(10);
    expect(oidc.secretsSeen.size - deviceCodesBefore).toBe(started);
    expect(events.filter((e) => e.phase === 'started')).toHaveLength(started);
    const refused = results.find((r) => r.code !== 'OK');
    expect(refused).toMatchObject({ code: 'RATE_LIMITED' });
    expect(refused!.retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused!.retryAfter).toBeLessThanOrEqual(60);
    // Another sandbox (uid) has its own allowance.
    expect(await codeOf(manager.initiate('dev', 'default', { ...sandbox, uid: 2000 }, never))).toEqual({ code: 'OK' });
    // Once the window has passed, the sandbox may start again.
    now += 61_000;
    expect(await codeOf(manager.initiate('dev', 'default', sandbox, never))).toEqual({ code: 'OK' });
    manager.close();
  }, 20_000);
});
