import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginThroughProxy, type LoginIO } from '../../src/client/login-adapter.js';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { resolveDirs } from '../../src/paths.js';
import type { OAuthInitiateData } from '../../src/protocol/messages.js';
import { openHostStores, type HostStores } from '../../src/store/open.js';
import { ScriptedBrowser } from '../support/browser.js';
import { NATIVE_CLIENT_ID, NATIVE_REDIRECT_URI, OidcTestServer } from '../support/oidc-server.js';
import { RawClient } from '../support/raw-client.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';

const run = promisify(execFile);
/** Values the host must keep: they may never show up in a log or audit line, nor in a frame sent to the client. */
const hostOnly = new Set<string>();
/** Values the client legitimately sees in frames (state in the URL, the session id) but that must never be logged. */
const neverLogged = new Set<string>();

function configFor(oidc: OidcTestServer): object {
  const common = { issuer: oidc.issuer, client_id: NATIVE_CLIENT_ID, scopes: ['openid', 'offline_access'], authorization_params: { prompt: 'consent' } };
  return {
    providers: {
      dev: { ...common, flow: 'device_code', authorization_params: undefined },
      paste: { ...common, flow: 'pkce_redirect', redirect_uri: NATIVE_REDIRECT_URI },
      loop: { ...common, flow: 'browser_redirect' },
    },
  };
}

function writeConfig(host: HostEnv, oidc: OidcTestServer): void {
  mkdirSync(join(host.home, 'config'), { recursive: true });
  writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify(configFor(oidc)));
}

describe('login from inside the sandbox, completed on the host', () => {
  let oidc: OidcTestServer;
  let host: HostEnv;
  let serve: ServeProcess;
  let stores: HostStores;
  const clients: ProxySocketClient[] = [];
  const client = (s = serve): ProxySocketClient => {
    const c = new ProxySocketClient({ socket: s.socket, capabilityToken: s.token });
    clients.push(c);
    return c;
  };
  const fastIO = (over: Partial<LoginIO>): LoginIO => ({
    show: () => undefined,
    promptCode: () => Promise.reject(new Error('no code expected')),
    sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 300))),
    ...over,
  });

  async function provesRefreshTokenOnHost(provider: string): Promise<void> {
    const stored = await stores.tokens.getToken(provider);
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
    const before = oidc.refreshSuccesses;
    const refreshed = await client().request('refresh_token', { provider });
    expect(oidc.refreshSuccesses).toBe(before + 1);
    expect(refreshed.access_token).not.toBe(stored!.access_token);
    expect('refresh_token' in refreshed).toBe(false);
    hostOnly.add((await stores.tokens.getToken(provider))!.refresh_token!);
  }

  beforeAll(async () => {
    oidc = await OidcTestServer.start();
    host = makeHostEnv();
    writeConfig(host, oidc);
    serve = await startServe(['--allow', 'dev', '--allow', 'paste:*', '--allow', 'loop'], host.env);
    stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await serve?.stop();
    await oidc?.close();
    host?.cleanup();
  });

  it('device code: the user approves in the browser, the sandbox gets a usable access token', async () => {
    let shown: OAuthInitiateData | undefined;
    const token = await loginThroughProxy(
      client(),
      'dev',
      'default',
      fastIO({
        show: (info) => {
          shown = info;
          neverLogged.add(info.session_id);
          void new ScriptedBrowser().completeDevice(info.verification_url!, info.user_code);
        },
      }),
    );
    expect(shown).toMatchObject({ flow_type: 'device_code', user_code: expect.any(String), pollIntervalMs: expect.any(Number) });
    expect(shown!.session_id).toMatch(/^[0-9a-f]{32}$/);
    expect(token.access_token).toBeTruthy();
    expect('refresh_token' in token).toBe(false);
    expect(token.expiry).toBeGreaterThan(Date.now() / 1000 + 60);
    await provesRefreshTokenOnHost('dev');
  }, 30_000);

  it('PKCE code paste: the pasted code is exchanged on the host', async () => {
    let authCode = '';
    const token = await loginThroughProxy(
      client(),
      'paste',
      'default',
      fastIO({
        show: (info) => {
          neverLogged.add(info.session_id);
          neverLogged.add(new URL(info.auth_url!).searchParams.get('state')!);
          expect(new URL(info.auth_url!).searchParams.get('code_challenge_method')).toBe('S256');
        },
        promptCode: async () => {
          // The user opened the URL (we grab it from the last initiate via the browser).
          throw new Error('replaced below');
        },
      }),
    ).catch(() => null);
    expect(token).toBeNull(); // the placeholder prompt failed: that session is abandoned

    const c = client();
    const info = await c.request('oauth_initiate', { provider: 'paste' });
    neverLogged.add(info.session_id);
    const landed = await new ScriptedBrowser().authorize(info.auth_url!, NATIVE_REDIRECT_URI);
    authCode = landed.searchParams.get('code')!;
    hostOnly.add(authCode);
    const state = landed.searchParams.get('state')!;
    neverLogged.add(state);
    const t = await c.request('oauth_exchange', { session_id: info.session_id, code: `${authCode}#${state}` });
    expect(t.access_token).toBeTruthy();
    expect('refresh_token' in t).toBe(false);
    // Replaying the session is refused.
    await expect(c.request('oauth_exchange', { session_id: info.session_id, code: authCode })).rejects.toMatchObject({ code: 'SESSION_ALREADY_USED' });
    await provesRefreshTokenOnHost('paste');
  });

  it('loopback redirect: the browser lands on the host listener; a wrong state is refused', async () => {
    let delivered = false;
    const token = await loginThroughProxy(
      client(),
      'loop',
      'default',
      fastIO({
        show: (info) => {
          neverLogged.add(info.session_id);
          const auth = new URL(info.auth_url!);
          const redirect = auth.searchParams.get('redirect_uri')!;
          expect(redirect).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
          neverLogged.add(auth.searchParams.get('state')!);
          void (async () => {
            const forged = await fetch(`${redirect}?code=forged&state=not-the-state`);
            expect(forged.status).toBe(400);
            await forged.text();
            const landed = await new ScriptedBrowser().authorize(auth, redirect);
            hostOnly.add(landed.searchParams.get('code')!);
            const res = await fetch(landed);
            expect(res.status).toBe(200);
            expect(await res.text()).toContain('Logged in');
            delivered = true;
          })();
        },
      }),
    );
    expect(delivered).toBe(true);
    expect(token.access_token).toBeTruthy();
    await provesRefreshTokenOnHost('loop');
  });

  it('answers the wrong op for the flow, unknown and foreign sessions, denial and a wrong code', async () => {
    const c = client();
    const paste = await c.request('oauth_initiate', { provider: 'paste' });
    const pollErr = (await c.request('oauth_poll', { session_id: paste.session_id }).catch((e: unknown) => e)) as { code: string; message: string };
    expect(pollErr.code).toBe('INVALID_REQUEST');
    expect(pollErr.message).toContain('oauth_exchange');
    const dev = await c.request('oauth_initiate', { provider: 'dev' });
    const exErr = (await c.request('oauth_exchange', { session_id: dev.session_id, code: 'x' }).catch((e: unknown) => e)) as { code: string; message: string };
    expect(exErr.code).toBe('INVALID_REQUEST');
    expect(exErr.message).toContain('oauth_poll');
    await expect(c.request('oauth_poll', { session_id: '0'.repeat(32) })).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });

    // Another peer process cannot use this session.
    const script = `
      const { ProxySocketClient } = await import(${JSON.stringify(new URL('../../src/client/socket-client.ts', import.meta.url).href)});
      const c = new ProxySocketClient({ socket: ${JSON.stringify(serve.socket)}, capabilityToken: ${JSON.stringify(serve.token)} });
      try { await c.request('oauth_poll', { session_id: ${JSON.stringify(dev.session_id)} }); console.log('FOUND'); }
      catch (e) { console.log(e.code); } finally { await c.close(); }`;
    const other = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    expect(other.stdout.trim()).toBe('SESSION_NOT_FOUND');

    // A wrong pasted code fails the exchange and still consumes the session.
    const wrong = await c.request('oauth_exchange', { session_id: paste.session_id, code: 'definitely-not-a-code' }).catch((e: { code: string }) => e.code);
    expect(wrong).toBe('EXCHANGE_FAILED');
    await expect(c.request('oauth_exchange', { session_id: paste.session_id, code: 'again' })).rejects.toMatchObject({ code: 'SESSION_ALREADY_USED' });

    // Denied consent on the device page ends the poll with EXCHANGE_FAILED (ok:true, status error).
    await new ScriptedBrowser().completeDevice(dev.verification_url!, dev.user_code, 'deny');
    let poll = await c.request('oauth_poll', { session_id: dev.session_id });
    const deadline = Date.now() + 20_000;
    while (poll.status === 'pending' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      poll = await c.request('oauth_poll', { session_id: dev.session_id });
    }
    expect(poll).toMatchObject({ status: 'error', code: 'EXCHANGE_FAILED' });
  }, 30_000);

  it('oauth_cancel stops the host polling at once', async () => {
    const c = client();
    const dev = await c.request('oauth_initiate', { provider: 'dev' });
    await c.request('oauth_cancel', { session_id: dev.session_id });
    const requests = oidc.tokenRequests;
    await new Promise((r) => setTimeout(r, (dev.pollIntervalMs ?? 5000) + 1500));
    expect(oidc.tokenRequests).toBe(requests);
    await expect(c.request('oauth_poll', { session_id: dev.session_id })).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });
  }, 20_000);

  it('a read-only policy refuses login', async () => {
    const ro = await startServe(['--allow', 'dev', '--read-only'], host.env);
    try {
      await expect(client(ro).request('oauth_initiate', { provider: 'dev' })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    } finally {
      await ro.stop();
    }
  });

  it('an expired session answers SESSION_EXPIRED', async () => {
    const s = await startServe(['--allow', 'paste'], { ...host.env, CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS: '1' });
    try {
      const c = client(s);
      const info = await c.request('oauth_initiate', { provider: 'paste' });
      await new Promise((r) => setTimeout(r, 1300));
      await expect(c.request('oauth_exchange', { session_id: info.session_id, code: 'x' })).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
      for (const secret of [info.session_id]) expect(s.stderr()).not.toContain(secret);
    } finally {
      await s.stop();
    }
  });

  it('the CLI login inside the sandbox prints the URL, reads the pasted code and logs in', async () => {
    const env = { PATH: process.env.PATH, CREDPROXY_SOCKET: serve.socket, CREDPROXY_TOKEN: serve.token };
    // A wrong code pasted on stdin: the CLI reports the failed exchange with exit 1.
    const bad = await runCli(['login', 'paste', '--bucket', 'cli'], { env, input: 'placeholder\n' });
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toMatch(/code_challenge=/);
    expect(bad.stderr).toMatch(/EXCHANGE_FAILED/);

    // The real flow: read the URL the CLI prints, play the browser, paste the code.
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.js');
    const child2 = spawn(process.execPath, [BIN, 'login', 'paste', '--bucket', 'cli'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let err2 = '';
    const exited2 = new Promise<number | null>((r) => child2.on('exit', (c) => r(c)));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no URL from login; stderr so far: ${err2}`)), 10_000);
      child2.stderr.on('data', (d: Buffer) => {
        err2 += d.toString();
        if (/\/auth\?\S+\n/.test(err2)) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const url2 = /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)/.exec(err2)![1]!;
    const landed = await new ScriptedBrowser().authorize(url2, NATIVE_REDIRECT_URI);
    hostOnly.add(landed.searchParams.get('code')!);
    child2.stdin.end(`${landed.searchParams.get('code')}\n`);
    expect(await exited2).toBe(0);
    expect(err2).toMatch(/logged in to paste:cli; the access token expires/);
    expect(typeof (await stores.tokens.getToken('paste', 'cli'))?.refresh_token).toBe('string');
    const logout = await runCli(['logout', 'paste', '--bucket', 'cli'], { env });
    expect(logout.code, logout.stderr).toBe(0);
    expect(await stores.tokens.getToken('paste', 'cli')).toBeNull();
  }, 30_000);

  it('on the host, `credproxy login` runs the device flow itself and stores the token', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.js');
    const child = spawn(process.execPath, [BIN, 'login', 'dev', '--bucket', 'hostside', '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const m = await new Promise<RegExpExecArray>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no device prompt; stderr: ${err}`)), 10_000);
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        const found = /open (\S+) and enter the code: (\S+)\n/.exec(err);
        if (found) {
          clearTimeout(t);
          resolve(found);
        }
      });
    });
    await new ScriptedBrowser().completeDevice(m[1]!, m[2]!);
    expect(await exited).toBe(0);
    expect(err).toMatch(/logged in to dev:hostside/);
    const stored = await stores.tokens.getToken('dev', 'hostside');
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
    expect(err).not.toContain(stored!.refresh_token!);
    const out = await runCli(['logout', 'dev', '--bucket', 'hostside'], { env: host.env });
    expect(out.code, out.stderr).toBe(0);
    expect(await stores.tokens.getToken('dev', 'hostside')).toBeNull();
  }, 30_000);

  it('on the host, a loopback-redirect login waits for the browser and stores the token', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('../support/cli.js');
    const child = spawn(process.execPath, [BIN, 'login', 'loop', '--bucket', 'hostloop', '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no URL; stderr: ${err}`)), 10_000);
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        const found = /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n/.exec(err);
        if (found) {
          clearTimeout(t);
          resolve(found[1]!);
        }
      });
    });
    await new Promise((r) => setTimeout(r, 500)); // the CLI must still be waiting, not exited
    expect(child.exitCode).toBeNull();
    const redirect = new URL(url).searchParams.get('redirect_uri')!;
    const landed = await new ScriptedBrowser().authorize(url, redirect);
    hostOnly.add(landed.searchParams.get('code')!);
    expect((await fetch(landed)).status).toBe(200);
    expect(await exited).toBe(0);
    const stored = await stores.tokens.getToken('loop', 'hostloop');
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
  }, 30_000);

  it('canary sweep: no code, refresh token, state or full session id in logs or audit; no host secret in frames', async () => {
    // One more flow over a raw socket to see every byte the client receives.
    const raw = await RawClient.connect(serve.socket);
    await raw.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token });
    const init = await raw.request('oauth_initiate', { provider: 'paste' });
    const info = init.data as OAuthInitiateData;
    neverLogged.add(info.session_id);
    const landed = await new ScriptedBrowser().authorize(info.auth_url!, NATIVE_REDIRECT_URI);
    const code = landed.searchParams.get('code')!;
    hostOnly.add(code);
    neverLogged.add(landed.searchParams.get('state')!);
    expect(await raw.request('oauth_exchange', { session_id: info.session_id, code })).toMatchObject({ ok: true });
    const stored = await stores.tokens.getToken('paste');
    hostOnly.add(stored!.refresh_token!);
    raw.close();

    const audit = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8');
    const logs = serve.stderr();
    expect(logs).toContain('login completed');
    for (const secret of [...hostOnly, ...neverLogged]) {
      expect(secret.length).toBeGreaterThan(8);
      expect(logs).not.toContain(secret);
      expect(audit).not.toContain(secret);
    }
    for (const secret of hostOnly) expect(raw.receivedText).not.toContain(secret);
    expect(raw.receivedText).not.toContain('code_verifier');
    // Everything host-only the authorization server saw in this file's flows: codes, verifiers, device codes, refresh tokens.
    const kinds = [...oidc.secretsSeen];
    expect(kinds.length).toBeGreaterThan(10);
    for (const secret of kinds) {
      expect(logs).not.toContain(secret);
      expect(audit).not.toContain(secret);
      expect(raw.receivedText).not.toContain(secret);
    }
  });
});
