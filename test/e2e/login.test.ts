import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginThroughProxy, type LoginIO } from '../../src/client/login-adapter.js';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { resolveDirs } from '../../src/paths.js';
import type { OAuthInitiateData } from '../../src/protocol/messages.js';
import { openHostStores, type HostStores } from '../../src/store/open.js';
import type { SanitizedToken } from '../../src/store/types.js';
import { ScriptedBrowser } from '../support/browser.js';
import { BIN, makeHostEnv, runCli, startServe, waitForStderr, type HostEnv, type ServeProcess } from '../support/cli.js';
import { loginProviders, NATIVE_REDIRECT_URI, OidcTestServer } from '../support/oidc-server.js';
import { RecordingRelay } from '../login/support/recording-relay.js';

/**
 * Login started in the "sandbox" (the adapter, or the real CLI with
 * CREDPROXY_SOCKET set), completed on the host by a real `credproxy serve`
 * against a real oidc-provider, with the user's browser played by
 * ScriptedBrowser. Every sandbox connection goes through a recording relay,
 * so the canary sweep sees every byte the sandbox side received.
 */
const run = promisify(execFile);
/** Host-only values: never in a frame the sandbox receives, a log line or the audit file. */
const hostOnly = new Set<string>();
/** Values the sandbox legitimately sees (the session id, the state inside the URL) that must still never be logged. */
const neverLogged = new Set<string>();

function configFor(oidc: OidcTestServer): object {
  const providers = loginProviders(oidc.issuer);
  // Without prompt=consent this server drops offline_access: a login with no refresh token.
  return { providers: { ...providers, online: { ...providers.paste, offline_consent: false } } };
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('login from inside the sandbox, completed on the host', () => {
  let oidc: OidcTestServer;
  let host: HostEnv;
  let serve: ServeProcess;
  let relay: RecordingRelay;
  let stores: HostStores;
  const clients: ProxySocketClient[] = [];
  const cliOutput: string[] = [];
  const adapterOutput: string[] = [];
  const client = (socket = relay.path, token = serve.token): ProxySocketClient => {
    const c = new ProxySocketClient({ socket, capabilityToken: token });
    clients.push(c);
    return c;
  };
  const sandboxEnv = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, LANG: 'C.UTF-8', CREDPROXY_SOCKET: relay.path, CREDPROXY_TOKEN: serve.token });
  const io = (over: Partial<LoginIO>): LoginIO => ({
    output: { write: (t: string) => adapterOutput.push(t), isTTY: false },
    prompt: () => Promise.reject(new Error('no code expected')),
    // The host's advice (5 s device, 2 s loopback) is honoured by the CLI; here it only slows the suite.
    sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 250))),
    ...over,
  });

  /** The sandbox's token works at the provider (oidc userinfo). */
  async function usableInSandbox(token: SanitizedToken): Promise<void> {
    expect(token).not.toHaveProperty('refresh_token');
    expect(token.expiry).toBeGreaterThan(Date.now() / 1000 + 60);
    const res = await fetch(`${oidc.issuer}/me`, { headers: { authorization: `Bearer ${token.access_token}` } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { sub?: string }).sub).toBeTruthy();
  }

  /** The refresh token exists only on the host: a host-side refresh through the proxy uses it. */
  async function provesRefreshTokenOnHost(provider: string, bucket = 'default'): Promise<void> {
    const stored = await stores.tokens.getToken(provider, bucket);
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
    const before = oidc.refreshSuccesses;
    const refreshed = await client().request('refresh_token', { provider, bucket });
    expect(oidc.refreshSuccesses).toBe(before + 1);
    expect(refreshed.access_token).not.toBe(stored!.access_token);
    expect(refreshed).not.toHaveProperty('refresh_token');
    hostOnly.add((await stores.tokens.getToken(provider, bucket))!.refresh_token!);
  }

  beforeAll(async () => {
    oidc = await OidcTestServer.start();
    host = makeHostEnv();
    mkdirSync(join(host.home, 'config'), { recursive: true });
    writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify(configFor(oidc)));
    serve = await startServe(['--allow', 'dev:*', '--allow', 'paste:*', '--allow', 'loop', '--allow', 'online', '--allow-write'], host.env);
    relay = await RecordingRelay.start(serve.socket);
    stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
  });
  afterAll(async () => {
    for (const c of clients) await c.close();
    await relay?.close();
    await serve?.stop();
    await stores?.close();
    await oidc?.close();
    host?.cleanup();
  });

  it('device code: the user approves in the browser; the sandbox gets a usable access token, the host keeps the refresh token', async () => {
    let shown: OAuthInitiateData | undefined;
    const token = await loginThroughProxy(client(), 'dev', 'default', io({
      onStart: (info) => {
        shown = info;
        neverLogged.add(info.session_id);
        void new ScriptedBrowser().completeDevice(info.verification_url!, info.user_code);
      },
    }));
    expect(shown).toMatchObject({ flow_type: 'device_code', verification_url: `${oidc.issuer}/device`, user_code: expect.any(String), pollIntervalMs: 5000 });
    expect(shown!.session_id).toMatch(/^[0-9a-f]{32}$/);
    await usableInSandbox(token);
    await provesRefreshTokenOnHost('dev');
    // Announced on the host with the account the provider vouched for (id_token sub: the dev login name).
    await until(() => /for dev:default completed: account sub:\S+/.test(serve.stderr()), 5000, 'the login announcement');
    expect(serve.stderr()).toMatch(/credproxy: login from the sandbox \(pid \d+\) for dev:default started \(device_code\)/);
    const account = /for dev:default completed: account (sub:\S+)/.exec(serve.stderr())![1]!;
    await until(() => readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8').includes('"login_completed"'), 5000, 'the login audit line');
    const lines = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toContainEqual(expect.objectContaining({ op: 'login_started', provider: 'dev', bucket: 'default', flow: 'device_code', peerPid: process.pid }));
    expect(lines).toContainEqual(expect.objectContaining({ op: 'login_completed', provider: 'dev', bucket: 'default', account, result: 'OK' }));
  }, 30_000);

  it('PKCE code paste: the code the provider showed is exchanged on the host', async () => {
    let auth = '';
    const token = await loginThroughProxy(client(), 'paste', 'default', io({
      onStart: (info) => {
        neverLogged.add(info.session_id);
        auth = info.auth_url!;
        const url = new URL(auth);
        neverLogged.add(url.searchParams.get('state')!);
        expect(url.searchParams.get('code_challenge_method')).toBe('S256');
        expect(url.searchParams.has('code_verifier')).toBe(false);
      },
      prompt: async () => {
        // The user logs in with the URL and pastes what the page shows: code#state.
        const landed = await new ScriptedBrowser().authorize(auth, NATIVE_REDIRECT_URI);
        hostOnly.add(landed.searchParams.get('code')!);
        return `${landed.searchParams.get('code')}#${landed.searchParams.get('state')}`;
      },
    }));
    await usableInSandbox(token);
    await provesRefreshTokenOnHost('paste');
  });

  it('loopback redirect: the browser lands on the host listener; a wrong state is refused there', async () => {
    let delivered: Promise<void> = Promise.resolve();
    const token = await loginThroughProxy(client(), 'loop', 'default', io({
      onStart: (info) => {
        neverLogged.add(info.session_id);
        const auth = new URL(info.auth_url!);
        const redirect = auth.searchParams.get('redirect_uri')!;
        expect(redirect).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
        neverLogged.add(auth.searchParams.get('state')!);
        delivered = (async () => {
          const forged = await fetch(`${redirect}?code=forged-code-value&state=not-the-state`);
          expect(forged.status).toBe(400);
          await forged.text();
          const landed = await new ScriptedBrowser().authorize(auth, redirect);
          hostOnly.add(landed.searchParams.get('code')!);
          const res = await fetch(landed);
          expect(res.status).toBe(200);
          expect(await res.text()).toContain('Logged in');
        })();
      },
    }));
    await delivered;
    await usableInSandbox(token);
    await provesRefreshTokenOnHost('loop');
  });

  it('failure paths: wrong op for the flow, unknown and foreign sessions, wrong pasted code, replay, denied consent', async () => {
    const c = client();
    // Started first: the host polls the device grant every 5 s while the rest runs.
    const dev = await c.request('oauth_initiate', { provider: 'dev', bucket: 'denied' });
    neverLogged.add(dev.session_id);
    await new ScriptedBrowser().completeDevice(dev.verification_url!, dev.user_code, 'deny');

    const paste = await c.request('oauth_initiate', { provider: 'paste' });
    neverLogged.add(paste.session_id);
    await expect(c.request('oauth_poll', { session_id: paste.session_id })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      message: 'a pkce_redirect session is completed with oauth_exchange, not oauth_poll',
    });
    await expect(c.request('oauth_exchange', { session_id: dev.session_id, code: 'x' })).rejects.toMatchObject({
      code: 'INVALID_REQUEST',
      message: 'a device_code session is completed with oauth_poll, not oauth_exchange',
    });
    await expect(c.request('oauth_poll', { session_id: '0'.repeat(32) })).rejects.toMatchObject({ code: 'SESSION_NOT_FOUND' });

    // Another process, even with the capability token, cannot see or cancel this session.
    const script = `
      const { ProxySocketClient } = await import(${JSON.stringify(new URL('../../src/client/socket-client.ts', import.meta.url).href)});
      const c = new ProxySocketClient({ socket: ${JSON.stringify(serve.socket)}, capabilityToken: ${JSON.stringify(serve.token)} });
      const out = [];
      for (const op of ['oauth_poll', 'oauth_cancel']) {
        try { await c.request(op, { session_id: ${JSON.stringify(dev.session_id)} }); out.push('FOUND'); } catch (e) { out.push(e.code); }
      }
      try { await c.request('oauth_exchange', { session_id: ${JSON.stringify(paste.session_id)}, code: 'x' }); out.push('FOUND'); } catch (e) { out.push(e.code); }
      console.log(out.join(' ')); await c.close();`;
    const other = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    expect(other.stdout.trim()).toBe('SESSION_NOT_FOUND SESSION_NOT_FOUND SESSION_NOT_FOUND');

    // A wrong pasted code fails the exchange and still consumes the session; a replay is refused.
    await expect(c.request('oauth_exchange', { session_id: paste.session_id, code: 'definitely-not-a-code' })).rejects.toMatchObject({ code: 'EXCHANGE_FAILED' });
    await expect(c.request('oauth_exchange', { session_id: paste.session_id, code: 'again' })).rejects.toMatchObject({ code: 'SESSION_ALREADY_USED' });

    // Denied consent: the poll itself succeeds (ok:true) and reports EXCHANGE_FAILED.
    let poll = await c.request('oauth_poll', { session_id: dev.session_id });
    const deadline = Date.now() + 20_000;
    while (poll.status === 'pending' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      poll = await c.request('oauth_poll', { session_id: dev.session_id });
    }
    expect(poll).toEqual({ status: 'error', code: 'EXCHANGE_FAILED', error: 'the dev login was denied' });
    await expect(c.request('oauth_poll', { session_id: dev.session_id })).rejects.toMatchObject({ code: 'SESSION_ALREADY_USED' });
    expect(await stores.tokens.getToken('dev', 'denied')).toBeNull();
  }, 30_000);

  it('an expired session answers SESSION_EXPIRED (CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS)', async () => {
    const s = await startServe(['--allow', 'paste'], { ...host.env, CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS: '1' });
    try {
      const c = client(s.socket, s.token);
      const info = await c.request('oauth_initiate', { provider: 'paste' });
      neverLogged.add(info.session_id);
      await new Promise((r) => setTimeout(r, 1200));
      await expect(c.request('oauth_exchange', { session_id: info.session_id, code: 'x' })).rejects.toMatchObject({ code: 'SESSION_EXPIRED' });
      expect(s.stderr()).toContain(info.session_id.slice(0, 8));
      expect(s.stderr()).not.toContain(info.session_id);
    } finally {
      await s.stop();
    }
  });

  it('a read-only policy refuses every login op', async () => {
    const ro = await startServe(['--allow', 'dev', '--read-only'], host.env);
    try {
      const c = client(ro.socket, ro.token);
      await expect(c.request('oauth_initiate', { provider: 'dev' })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      for (const op of ['oauth_poll', 'oauth_cancel'] as const) {
        await expect(c.request(op, { session_id: 'a'.repeat(32) })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      }
    } finally {
      await ro.stop();
    }
  });

  it('the CLI inside the sandbox prints the URL, reads the pasted code, logs in; logout goes through the proxy', async () => {
    // A wrong code pasted on stdin: the CLI reports the failed exchange with exit 1.
    const bad = await runCli(['login', 'paste', '--bucket', 'cli'], { env: sandboxEnv(), input: 'placeholder\n' });
    cliOutput.push(bad.stderr, bad.stdout);
    expect(bad.code, bad.stderr).toBe(1);
    expect(bad.stderr).toMatch(/code_challenge=/);
    expect(bad.stderr).toMatch(/EXCHANGE_FAILED/);

    const child = spawn(process.execPath, [BIN, 'login', 'paste', '--bucket', 'cli'], { env: sandboxEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { match, text } = await waitForStderr(child, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n[\s\S]*paste the code/, 'URL and prompt');
    const landed = await new ScriptedBrowser().authorize(match[1]!, NATIVE_REDIRECT_URI);
    hostOnly.add(landed.searchParams.get('code')!);
    child.stdin.end(`\n${landed.searchParams.get('code')}\n`); // an early Enter is skipped
    expect(await exited).toBe(0);
    cliOutput.push(text());
    expect(text()).toMatch(/logged in to paste:cli; the access token expires \d{4}-\d\d-\d\dT[\d:.]+Z \(in \d+ s\)\n/);
    expect(typeof (await stores.tokens.getToken('paste', 'cli'))?.refresh_token).toBe('string');

    const logout = await runCli(['logout', 'paste', '--bucket', 'cli'], { env: sandboxEnv() });
    expect(logout.code, logout.stderr).toBe(0);
    expect(logout.stderr).toContain('logged out of paste:cli in the sandbox; the host keeps its refresh token');
    // The access token the sandbox could see is never served again; the host's login stays.
    expect(await stores.tokens.getToken('paste', 'cli')).toMatchObject({ expiry: 0 });
    expect(typeof (await stores.tokens.getToken('paste', 'cli'))?.refresh_token).toBe('string');
  }, 30_000);

  it('a login that ends without a refresh token says so: in the answer, in the sandbox CLI, in the host log and in status', async () => {
    const child = spawn(process.execPath, [BIN, 'login', 'online'], { env: sandboxEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { match, text } = await waitForStderr(child, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n[\s\S]*paste the code/, 'URL and prompt');
    expect(new URL(match[1]!).searchParams.has('prompt')).toBe(false);
    const landed = await new ScriptedBrowser().authorize(match[1]!, NATIVE_REDIRECT_URI);
    hostOnly.add(landed.searchParams.get('code')!);
    child.stdin.end(`${landed.searchParams.get('code')}\n`);
    expect(await exited).toBe(0);
    cliOutput.push(text());
    const stored = await stores.tokens.getToken('online', 'default');
    expect(stored?.access_token).toBeTruthy();
    expect(stored).not.toHaveProperty('refresh_token');
    const when = new Date(stored!.expiry * 1000).toISOString();
    const warning = `this login cannot be renewed; it expires at ${when}`;
    expect(text()).toContain(`credproxy: warning: ${warning}`);
    expect(relay.toClientText).toContain(`"login_warning":"${warning}`);
    expect(serve.stderr()).toContain(`online:default: ${warning}`);
    // The stored login is kept as it came: no warning text inside the token.
    expect(stored).not.toHaveProperty('login_warning');

    const status = await runCli(['status'], { env: host.env });
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/online:default {2}expires \S+ \(in \d+ s\), cannot be renewed \(no refresh token\): log in again with `credproxy login online` when it expires/);
    const json = JSON.parse((await runCli(['status', '--json'], { env: host.env })).stdout) as { tokens: { provider: string; renewable?: boolean }[] };
    expect(json.tokens.find((t) => t.provider === 'online')).toMatchObject({ renewable: false, canRefresh: false });
    expect(json.tokens.find((t) => t.provider === 'paste')).toMatchObject({ renewable: true, canRefresh: true });
  }, 30_000);

  it('Ctrl+C in the sandbox CLI mid-poll cancels the session: the host stops polling the provider', async () => {
    const child = spawn(process.execPath, [BIN, 'login', 'dev', '--bucket', 'interrupted'], { env: sandboxEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { text } = await waitForStderr(child, /enter the code: \S+\n[\s\S]*waiting for the login/, 'device prompt');
    const before = oidc.tokenRequests;
    await until(() => oidc.tokenRequests > before, 10_000, 'the host to poll the device grant');
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    cliOutput.push(text());
    expect(text()).toContain('credproxy: login cancelled');
    expect(serve.stderr()).toContain('login session cancelled');
    const polled = oidc.tokenRequests;
    await new Promise((r) => setTimeout(r, 6000)); // more than the 5 s poll interval
    expect(oidc.tokenRequests).toBe(polled);
    expect(await stores.tokens.getToken('dev', 'interrupted')).toBeNull();
  }, 30_000);

  it('a sandbox CLI killed mid-poll (no cancel sent) stops the host polling at once and frees its login slot', async () => {
    // Straight to serve's socket, so that the peer is the CLI process itself.
    const env = { ...sandboxEnv(), CREDPROXY_SOCKET: serve.socket };
    const child = spawn(process.execPath, [BIN, 'login', 'dev', '--bucket', 'killed'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    const { text } = await waitForStderr(child, /enter the code: \S+\n[\s\S]*waiting for the login/, 'device prompt');
    const before = oidc.tokenRequests;
    await until(() => oidc.tokenRequests > before, 10_000, 'the host to poll the device grant');
    child.kill('SIGKILL');
    await exited;
    cliOutput.push(text());
    await until(() => serve.stderr().includes('login session abandoned: its owner is gone'), 10_000, 'the host to drop the abandoned login');
    const polled = oidc.tokenRequests;
    await new Promise((r) => setTimeout(r, 6000)); // more than the 5 s poll interval
    expect(oidc.tokenRequests).toBe(polled);
    expect(await stores.tokens.getToken('dev', 'killed')).toBeNull();
  }, 40_000);

  it('on the host, `credproxy login` runs the device flow in-process and stores the token; logout removes it', async () => {
    const child = spawn(process.execPath, [BIN, 'login', 'dev', '--bucket', 'hostside', '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { match, text } = await waitForStderr(child, /open (\S+) and enter the code: (\S+)\n/, 'device prompt');
    await new ScriptedBrowser().completeDevice(match[1]!, match[2]!);
    expect(await exited).toBe(0);
    expect(text()).toMatch(/logged in to dev:hostside/);
    const stored = await stores.tokens.getToken('dev', 'hostside');
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
    expect(text()).not.toContain(stored!.refresh_token!);
    const out = await runCli(['logout', 'dev', '--bucket', 'hostside'], { env: host.env });
    expect(out.code, out.stderr).toBe(0);
    expect(await stores.tokens.getToken('dev', 'hostside')).toBeNull();
  }, 30_000);

  it('on the host, a loopback-redirect login waits for the browser and stores the token', async () => {
    const child = spawn(process.execPath, [BIN, 'login', 'loop', '--bucket', 'hostloop', '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { match } = await waitForStderr(child, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n/, 'URL');
    await new Promise((r) => setTimeout(r, 500)); // the CLI must still be waiting, not exited
    expect(child.exitCode).toBeNull();
    const redirect = new URL(match[1]!).searchParams.get('redirect_uri')!;
    const landed = await new ScriptedBrowser().authorize(match[1]!, redirect);
    hostOnly.add(landed.searchParams.get('code')!);
    expect((await fetch(landed)).status).toBe(200);
    expect(await exited).toBe(0);
    const stored = await stores.tokens.getToken('loop', 'hostloop');
    expect(typeof stored?.refresh_token).toBe('string');
    hostOnly.add(stored!.refresh_token!);
  }, 30_000);

  it('canary sweep: no host secret in any frame the sandbox received; no secret, state or full session id in logs or audit', async () => {
    const audit = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8');
    const logs = serve.stderr();
    expect(logs).toContain('login completed');
    expect(audit).toContain('oauth_initiate');
    const frames = relay.toClientText;
    expect(frames).toContain('"op":"handshake"');
    const sandboxSide = [frames, adapterOutput.join(''), ...cliOutput].join('\n');
    // Everything host-only the authorization server saw during this file: codes, verifiers, device codes, refresh tokens.
    const seen = [...oidc.secretsSeen];
    expect(seen.length).toBeGreaterThan(10);
    for (const secret of [...hostOnly, ...seen]) {
      expect(secret.length).toBeGreaterThan(8);
      expect(sandboxSide).not.toContain(secret);
      expect(logs).not.toContain(secret);
      expect(audit).not.toContain(secret);
    }
    for (const value of neverLogged) {
      expect(value.length).toBeGreaterThan(8);
      expect(logs).not.toContain(value);
      expect(audit).not.toContain(value);
    }
    expect(frames).not.toMatch(/"code_verifier"|"device_code":|"refresh_token":/);
  });
});
