import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { resolveDirs } from '../../src/paths.js';
import { openHostStores, type HostStores } from '../../src/store/open.js';
import { NATIVE_CLIENT_ID, OidcTestServer, type TokenSet } from '../support/oidc-server.js';
import { RawClient } from '../support/raw-client.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';

const now = (): number => Math.floor(Date.now() / 1000);

function writeCorpConfig(home: string, issuer: string): void {
  mkdirSync(join(home, 'config'), { recursive: true });
  writeFileSync(join(home, 'config', 'config.json'), JSON.stringify({ providers: { corp: { flow: 'pkce_redirect', issuer, client_id: NATIVE_CLIENT_ID } } }));
}

/** Everything secret the test has seen, to sweep frames and logs with at the end. */
const secrets = new Set<string>();

describe('refresh through a real credproxy serve and a real authorization server', () => {
  let oidc: OidcTestServer;
  let host: HostEnv;
  let serve: ServeProcess;
  let stores: HostStores;
  const raws: RawClient[] = [];
  const clients: ProxySocketClient[] = [];

  function client(s: ServeProcess = serve): ProxySocketClient {
    const c = new ProxySocketClient({ socket: s.socket, capabilityToken: s.token });
    clients.push(c);
    return c;
  }

  async function importToken(bucket: string, set: TokenSet, expiry: number): Promise<void> {
    secrets.add(set.refresh_token!);
    const r = await runCli(['token', 'import', 'corp', '--bucket', bucket], { env: host.env, input: JSON.stringify({ ...set, expires_in: undefined, expiry }) });
    expect(r.code, r.stderr).toBe(0);
  }

  async function storedRefreshToken(bucket: string): Promise<string | undefined> {
    const rt = (await stores.tokens.getToken('corp', bucket))?.refresh_token;
    if (rt) secrets.add(rt);
    return rt;
  }

  beforeAll(async () => {
    oidc = await OidcTestServer.start({ tokenDelayMs: 150 });
    host = makeHostEnv();
    writeCorpConfig(host.home, oidc.issuer);
    serve = await startServe(['--allow', 'corp:*'], host.env);
    stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
  });

  afterAll(async () => {
    for (const c of clients) await c.close();
    for (const r of raws) r.close();
    await serve?.stop();
    await oidc?.close();
    host?.cleanup();
  });

  it('refreshes an expired token transparently on get_token', async () => {
    const set = await oidc.issueTokens();
    await importToken('expired', set, now() - 10);
    const before = oidc.refreshSuccesses;
    const raw = await RawClient.connect(serve.socket);
    raws.push(raw);
    await raw.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token });
    const answer = await raw.request('get_token', { provider: 'corp', bucket: 'expired' });
    expect(answer).toMatchObject({ ok: true });
    const data = answer.data as { access_token: string; expiry: number };
    expect(data.access_token).not.toBe(set.access_token);
    expect(data.expiry).toBeGreaterThan(now() + 60);
    expect(oidc.refreshSuccesses - before).toBe(1);
    const rotated = await storedRefreshToken('expired');
    expect(rotated).toBeTruthy();
    expect(rotated).not.toBe(set.refresh_token);
  });

  it('100 concurrent refresh_token requests from 10 connections make exactly one grant, and the grant survives', async () => {
    const set = await oidc.issueTokens();
    await importToken('storm', set, now() + 3600);
    const before = { ok: oidc.refreshSuccesses, err: oidc.refreshErrors };
    const conns = Array.from({ length: 10 }, () => client());
    const answers = await Promise.all(conns.flatMap((c) => Array.from({ length: 10 }, () => c.request('refresh_token', { provider: 'corp', bucket: 'storm' }))));
    expect(oidc.refreshSuccesses - before.ok).toBe(1);
    expect(oidc.refreshErrors - before.err).toBe(0);
    expect(new Set(answers.map((a) => a.access_token)).size).toBe(1);
    expect(answers[0]!.access_token).not.toBe(set.access_token);
    // The rotated refresh token on the host still works: the grant was not revoked by reuse.
    const rt = await storedRefreshToken('storm');
    const direct = await oidc.refreshDirect(rt!);
    secrets.add(direct.refresh_token!);
    expect(direct.access_token).toBeTruthy();
  });

  it('two serve processes sharing one store never reuse a refresh token', async () => {
    const set = await oidc.issueTokens();
    await importToken('duo', set, now() + 3600);
    const second = await startServe(['--allow', 'corp:*'], host.env);
    try {
      const before = { ok: oidc.refreshSuccesses, err: oidc.refreshErrors };
      const a = client();
      const b = client(second);
      const answers = await Promise.all(
        Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).request('refresh_token', { provider: 'corp', bucket: 'duo' })),
      );
      expect(oidc.refreshErrors - before.err).toBe(0);
      expect(oidc.refreshSuccesses - before.ok).toBe(1);
      expect(new Set(answers.map((x) => x.access_token)).size).toBe(1);
      const rt = await storedRefreshToken('duo');
      secrets.add((await oidc.refreshDirect(rt!)).refresh_token!);
      expect(second.stderr()).not.toContain(set.refresh_token!);
    } finally {
      await second.stop();
    }
  });

  it('a revoked grant clears the stored refresh token and asks for a new login', async () => {
    const set = await oidc.issueTokens();
    await importToken('revoked', set, now() + 3600);
    await oidc.revoke(set.refresh_token!);
    const c = client();
    const err = (await c.request('refresh_token', { provider: 'corp', bucket: 'revoked' }).catch((e: unknown) => e)) as { code: string; message: string };
    expect(err.code).toBe('REAUTH_REQUIRED');
    expect(err.message).toMatch(/credproxy login corp --bucket revoked/);
    const stored = await stores.tokens.getToken('corp', 'revoked');
    expect(stored?.refresh_token).toBeUndefined();
    expect(stored?.access_token).toBe(set.access_token); // everything else kept
    // Without a refresh token the answer is REAUTH_REQUIRED before any cooldown check.
    await expect(c.request('refresh_token', { provider: 'corp', bucket: 'revoked' })).rejects.toMatchObject({ code: 'REAUTH_REQUIRED' });
  });

  it('holds the 30 s cooldown: a valid token is returned as is, an expired one is RATE_LIMITED with retryAfter', async () => {
    const set = await oidc.issueTokens();
    await importToken('cool', set, now() + 3600);
    const c = client();
    const first = await c.request('refresh_token', { provider: 'corp', bucket: 'cool' });
    const grants = oidc.refreshSuccesses;
    const again = await c.request('refresh_token', { provider: 'corp', bucket: 'cool' });
    expect(again.access_token).toBe(first.access_token);
    expect(oidc.refreshSuccesses).toBe(grants);
    // Replace it with an expired token (still refreshable): inside the cooldown it cannot be refreshed.
    const stored = await stores.tokens.getToken('corp', 'cool');
    await stores.tokens.saveToken('corp', { ...stored!, expiry: now() - 5 }, 'cool');
    const err = (await c.request('get_token', { provider: 'corp', bucket: 'cool' }).catch((e: unknown) => e)) as { code: string; retryAfter: number };
    expect(err.code).toBe('RATE_LIMITED');
    expect(err.retryAfter).toBeGreaterThanOrEqual(25);
    expect(err.retryAfter).toBeLessThanOrEqual(30);
    expect(oidc.refreshSuccesses).toBe(grants);
    await storedRefreshToken('cool');
  });

  it('a logout during a slow refresh waits for it and wins', async () => {
    const slow = await OidcTestServer.start({ tokenDelayMs: 1500 });
    const h = makeHostEnv();
    writeCorpConfig(h.home, slow.issuer);
    const s = await startServe(['--allow', 'corp:*', '--allow-write'], h.env);
    try {
      const set = await slow.issueTokens();
      secrets.add(set.refresh_token!);
      const imp = await runCli(['token', 'import', 'corp'], { env: h.env, input: JSON.stringify({ ...set, expiry: now() + 3600 }) });
      expect(imp.code, imp.stderr).toBe(0);
      const c = client(s);
      const grantsBefore = slow.refreshSuccesses;
      const refreshing = c.request('refresh_token', { provider: 'corp' }).catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 400)); // the refresh is now waiting on the slow server
      const logoutStarted = Date.now();
      await c.request('remove_token', { provider: 'corp' });
      expect(Date.now() - logoutStarted).toBeGreaterThan(500); // it waited for the refresh's lock
      await refreshing;
      expect(slow.refreshSuccesses - grantsBefore).toBe(1);
      const hs = await openHostStores({ choice: 'file', dirs: resolveDirs(h.env), env: h.env });
      // The sandbox's remove landed after the refresh: the refreshed access token is expired, the host keeps its refresh token.
      const after = await hs.tokens.getToken('corp');
      expect(after?.expiry).toBe(0);
      expect(typeof after?.refresh_token).toBe('string');
      // The host's own logout (same lock) removes it all.
      const out = await runCli(['logout', 'corp'], { env: h.env });
      expect(out.code, out.stderr).toBe(0);
      expect(await hs.tokens.getToken('corp')).toBeNull();
      expect(await c.request('get_token', { provider: 'corp' }).catch((e: { code: string }) => e.code)).toBe('NOT_FOUND');
    } finally {
      await s.stop();
      await slow.close();
      h.cleanup();
    }
  });

  it('renews a short-lived token with the timer before it expires', async () => {
    const short = await OidcTestServer.start();
    const h = makeHostEnv();
    writeCorpConfig(h.home, short.issuer);
    const s = await startServe(['--allow', 'corp'], h.env);
    try {
      const set = await short.issueTokens();
      secrets.add(set.refresh_token!);
      // 65 s left: get_token serves it without refreshing (> 60 s) and arms the timer,
      // which fires at expiry - lead - jitter = about 26-33 s from now.
      const expiry = now() + 65;
      const imp = await runCli(['token', 'import', 'corp'], { env: h.env, input: JSON.stringify({ ...set, expiry }) });
      expect(imp.code, imp.stderr).toBe(0);
      const c = client(s);
      await c.request('get_token', { provider: 'corp' }); // arms the renewal timer
      const hs = await openHostStores({ choice: 'file', dirs: resolveDirs(h.env), env: h.env });
      let renewed = null;
      while (now() < expiry) {
        const t = await hs.tokens.getToken('corp');
        if (t && t.access_token !== set.access_token) {
          renewed = t;
          break;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(renewed, 'the timer renewed the token before it expired').not.toBeNull();
      expect(renewed!.expiry).toBeGreaterThan(expiry);
      if (renewed!.refresh_token) secrets.add(renewed!.refresh_token);
      expect(short.refreshSuccesses).toBe(1);
      for (const secret of secrets) expect(s.stderr()).not.toContain(secret);
    } finally {
      await s.stop();
      await short.close();
      h.cleanup();
    }
  }, 90_000);

  it('canary sweep: no refresh token, old or new, in any frame, log line or audit line', async () => {
    expect(secrets.size).toBeGreaterThanOrEqual(8);
    const audit = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8');
    const texts = [serve.stderr(), audit, ...raws.map((r) => r.receivedText)];
    for (const secret of secrets) for (const text of texts) expect(text).not.toContain(secret);
    expect(serve.stderr()).toContain('token refreshed'); // the log is really captured at debug level
  });
});
