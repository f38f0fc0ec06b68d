import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDirs } from '../../src/paths.js';
import { SANDBOX_TOKEN_LIMITS } from '../../src/store/sandbox-token.js';
import { openHostStores, type HostStores } from '../../src/store/open.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';
import { RawClient, rawFrame } from '../support/raw-client.js';

/**
 * Issue 11 §1, as a hostile sandbox tries it against a real `serve`: token
 * writes are off unless --allow-write, logins on unless --no-login, and even
 * with writes allowed a save cannot smuggle deep structures, extra fields,
 * an endless expiry or a host-field override, and a remove cannot delete the
 * host's refresh token.
 */
const RT = `rt-host-${process.pid}-c4f1`;
const now = (): number => Math.floor(Date.now() / 1000);

function hostToken(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ access_token: `at-host-${process.pid}`, expiry: now() + 3600, refresh_token: RT, resource_url: 'portal.example', account_id: 'acct-host', ...extra });
}

/** A JSON text nested `depth` arrays deep (built as text: JSON.stringify would recurse). */
function nestedJson(depth: number): string {
  return `${'['.repeat(depth)}${']'.repeat(depth)}`;
}

describe('least privilege for sandbox writes (real serve)', () => {
  let host: HostEnv;
  let stores: HostStores;
  const serves: ServeProcess[] = [];
  const raws: RawClient[] = [];

  async function serveWith(args: string[]): Promise<ServeProcess> {
    const s = await startServe(args, host.env);
    serves.push(s);
    return s;
  }
  async function client(s: ServeProcess): Promise<RawClient> {
    const c = await RawClient.connect(s.socket);
    raws.push(c);
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: s.token })).toMatchObject({ ok: true });
    return c;
  }

  beforeAll(async () => {
    host = makeHostEnv();
    mkdirSync(join(host.home, 'config'), { recursive: true });
    writeFileSync(
      join(host.home, 'config', 'config.json'),
      JSON.stringify({ profiles: { writer: { allow: ['acme:*'], allowWrite: true }, nologin: { allow: ['acme:*'], login: false, allowWrite: true } } }),
    );
    for (const bucket of ['default', 'nest', 'far', 'gone']) {
      const r = await runCli(['token', 'import', 'acme', '--bucket', bucket], { env: host.env, input: hostToken() });
      expect(r.code, r.stderr).toBe(0);
    }
    stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
  });
  afterAll(async () => {
    for (const c of raws) c.close();
    for (const s of serves) await s.stop();
    await stores?.close();
    host?.cleanup();
  });

  it('by default the sandbox may log in but not save or remove tokens; --read-only refuses both', async () => {
    const s = await serveWith(['--allow', 'acme:*']);
    const c = await client(s);
    const save = await c.request('save_token', { provider: 'acme', token: { access_token: 'evil', expiry: now() + 60 } });
    expect(save).toMatchObject({ ok: false, code: 'UNAUTHORIZED', error: expect.stringContaining('--allow-write') });
    expect(await c.request('remove_token', { provider: 'acme' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    // Logins stay on: the request passes the policy (no provider named acme is configured on this host).
    expect(await c.request('oauth_initiate', { provider: 'acme' })).toMatchObject({ ok: false, code: 'PROVIDER_NOT_FOUND' });
    expect((await stores.tokens.getToken('acme'))?.access_token).toBe(`at-host-${process.pid}`);

    const ro = await client(await serveWith(['--allow', 'acme:*', '--read-only', '--allow-write']));
    expect(await ro.request('save_token', { provider: 'acme', token: { access_token: 'evil', expiry: 1 } })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await ro.request('oauth_initiate', { provider: 'acme' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });

    const nl = await client(await serveWith(['--allow', 'acme:*', '--no-login']));
    expect(await nl.request('oauth_initiate', { provider: 'acme' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED', error: expect.stringContaining('--no-login') });
    expect(await nl.request('save_token', { provider: 'acme', token: { access_token: 'evil', expiry: 1 } })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });

    // The same from profiles.
    const np = await client(await serveWith(['--profile', 'nologin']));
    expect(await np.request('oauth_initiate', { provider: 'acme' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await np.request('save_token', { provider: 'acme', bucket: 'scratch', token: { access_token: 'ok', expiry: now() + 60 } })).toMatchObject({ ok: true });
  });

  it('with --allow-write, a save keeps only bounded token fields: no nesting, no foreign fields, no host override, a clamped expiry', async () => {
    const s = await serveWith(['--profile', 'writer']);
    const c = await client(s);
    // 4,100 levels of nesting in an unknown field, and a resource_url pointing at the attacker.
    const payload = `{"v":1,"id":"deep","op":"save_token","payload":{"provider":"acme","bucket":"nest","token":{"access_token":"at-sandbox","expiry":${now() + 600},"junk":${nestedJson(4100)},"resource_url":"https://attacker.example/","account_id":"acct-evil","nested":{"a":{"b":1}}}}}`;
    c.sendRaw(rawFrame(payload));
    expect(await c.answerFor('deep')).toMatchObject({ ok: true });
    const stored = await stores.tokens.getToken('acme', 'nest');
    expect(stored).toMatchObject({ access_token: 'at-sandbox', refresh_token: RT, resource_url: 'portal.example', account_id: 'acct-host' });
    expect(stored).not.toHaveProperty('junk');
    expect(stored).not.toHaveProperty('nested');
    // Every later read works.
    expect(await c.request('get_token', { provider: 'acme', bucket: 'nest' })).toMatchObject({ ok: true, data: { access_token: 'at-sandbox', resource_url: 'portal.example' } });

    // An expiry in 2286 would stop the host from ever refreshing: clamped.
    expect(await c.request('save_token', { provider: 'acme', bucket: 'far', token: { access_token: 'at-far', expiry: 9_999_999_999 } })).toMatchObject({ ok: true });
    const far = await stores.tokens.getToken('acme', 'far');
    expect(far!.expiry).toBeLessThanOrEqual(now() + SANDBOX_TOKEN_LIMITS.horizonSeconds + 5);
    expect(far!.expiry).toBeGreaterThan(now() + SANDBOX_TOKEN_LIMITS.horizonSeconds - 600);

    // Oversized or malformed fields are refused outright and change nothing.
    const big = 'a'.repeat(SANDBOX_TOKEN_LIMITS.access_token + 1);
    expect(await c.request('save_token', { provider: 'acme', bucket: 'far', token: { access_token: big, expiry: now() + 60 } })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('save_token', { provider: 'acme', bucket: 'far', token: { access_token: 'x', expiry: now() + 60, scope: 'a\nb' } })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('save_token', { provider: 'acme', bucket: 'far', token: { access_token: 'x', expiry: now() + 60, token_type: ['Bearer'] } })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect((await stores.tokens.getToken('acme', 'far'))!.access_token).toBe('at-far');

    // A new entry may carry the known provider extras, bounded, and nothing else.
    expect(await c.request('save_token', { provider: 'acme', bucket: 'fresh', token: { access_token: 'at-f', expiry: now() + 60, id_token: 'a.b.c', resource_url: 'r.example', other: 'x' } })).toMatchObject({ ok: true });
    expect(await stores.tokens.getToken('acme', 'fresh')).toEqual({ access_token: 'at-f', expiry: expect.any(Number), token_type: 'Bearer', id_token: 'a.b.c', resource_url: 'r.example' });
    expect(c.receivedText).not.toContain(RT);
  });

  it('a remove from the sandbox takes the access token it could see and keeps the host refresh token; it says which', async () => {
    const s = await serveWith(['--allow', 'acme:*', '--allow-write']);
    const c = await client(s);
    expect(await c.request('remove_token', { provider: 'acme', bucket: 'gone' })).toMatchObject({ ok: true, data: { removed: 'access_token' } });
    expect(await stores.tokens.getToken('acme', 'gone')).toMatchObject({ refresh_token: RT, expiry: 0 });
    // The removed access token is never served again: the host would refresh (no provider configured here).
    expect(await c.request('get_token', { provider: 'acme', bucket: 'gone' })).toMatchObject({ ok: false, code: 'REAUTH_REQUIRED' });
    // An entry with no refresh token goes whole.
    expect(await c.request('save_token', { provider: 'acme', bucket: 'temp', token: { access_token: 't', expiry: now() + 60 } })).toMatchObject({ ok: true });
    expect(await c.request('remove_token', { provider: 'acme', bucket: 'temp' })).toMatchObject({ ok: true, data: { removed: 'entry' } });
    expect(await stores.tokens.getToken('acme', 'temp')).toBeNull();
  });
});
