import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { CredproxyError } from '../../src/errors.js';
import type { FlowContext, FlowOutcome, FlowStarter, RunningFlow } from '../../src/login/flows/index.js';
import { LoginSessionManager, sessionTimeoutFromEnv, type LoginSessionManagerOptions } from '../../src/login/session-manager.js';
import { ownerKey, procStartTime } from '../../src/login/owner.js';
import type { ProviderConfig } from '../../src/config.js';
import { ProviderRegistry } from '../../src/oauth/registry.js';
import type { OAuthProvider } from '../../src/oauth/types.js';
import type { PeerIdentity } from '../../src/server/context.js';
import type { OAuthToken } from '../../src/store/types.js';
import { MemoryTokenStore } from '../support/memory-stores.js';

const run = promisify(execFile);

/** A login flow whose every step the test decides. */
class FakeFlow {
  stopped = false;
  interval: number;
  exchanged: string[] = [];
  settle!: (o: FlowOutcome) => void;
  exchangeWith: (code: string) => Promise<OAuthToken> = async () => fullToken();
  readonly running: RunningFlow;

  constructor(readonly provider: OAuthProvider, readonly ctx: FlowContext) {
    ctx.stop.addEventListener('abort', () => (this.stopped = true));
    const type = provider.flow;
    this.interval = type === 'device_code' ? 5000 : 2000;
    const outcome = new Promise<FlowOutcome>((resolve) => (this.settle = resolve));
    this.running =
      type === 'pkce_redirect'
        ? {
            start: { flow_type: type, auth_url: 'https://auth.example.invalid/authorize?state=s' },
            pollIntervalMs: () => 0,
            exchange: (code) => {
              this.exchanged.push(code);
              return this.exchangeWith(code);
            },
          }
        : {
            start: { flow_type: type, ...(type === 'device_code' ? { verification_url: 'https://auth.example.invalid/device', user_code: 'WXYZ' } : { auth_url: 'https://auth.example.invalid/a' }), pollIntervalMs: this.interval },
            pollIntervalMs: () => this.interval,
            outcome,
          };
  }
}

class FakeFlows {
  readonly started: FakeFlow[] = [];
  /** While set, initiations wait here (a slow provider). */
  gate: Promise<void> | null = null;
  readonly starter: FlowStarter = async (provider, ctx) => {
    if (this.gate) await this.gate;
    const f = new FakeFlow(provider, ctx);
    this.started.push(f);
    return f.running;
  };
  get last(): FakeFlow {
    return this.started.at(-1)!;
  }
}

function fullToken(): OAuthToken {
  return { access_token: 'at-1', refresh_token: 'rt-secret-1', expiry: Math.floor(Date.now() / 1000) + 3600, token_type: 'Bearer', id_token: 'idt' };
}

const endpoints = { authorization_endpoint: 'https://auth.example.invalid/authorize', token_endpoint: 'https://auth.example.invalid/token', client_id: 'c' };
const PROVIDERS: Record<string, ProviderConfig> = {
  paste: { flow: 'pkce_redirect', ...endpoints, redirect_uri: 'https://auth.example.invalid/code' },
  dev: { flow: 'device_code', ...endpoints, device_authorization_endpoint: 'https://auth.example.invalid/device' },
  loop: { flow: 'browser_redirect', ...endpoints },
};

function setup(options: Partial<LoginSessionManagerOptions> = {}) {
  const flows = new FakeFlows();
  const tokens = new MemoryTokenStore();
  let now = 1_000_000;
  const clock = { advance: (ms: number) => (now += ms) };
  const manager = new LoginSessionManager({
    tokens,
    providers: new ProviderRegistry({ presets: {}, config: { providers: PROVIDERS } }),
    startFlow: flows.starter,
    processStartTime: () => 'boot-1',
    now: () => now,
    // The per-sandbox cap and start rate have their own tests; the others exercise the per-process and overall caps.
    maxLivePerSandbox: 1_000_000,
    maxStartsPerMinute: 1_000_000,
    ...options,
  });
  return { manager, flows, tokens, clock };
}

const A: PeerIdentity = { connectionId: 1, pid: 4242, uid: 1000 };
const never = new AbortController().signal;

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CredproxyError) return err.code;
    throw err;
  }
  return 'OK';
}

describe('LoginSessionManager', () => {
  it('hands out 128-bit ids as 32 lowercase hex digits, never twice', async () => {
    const { manager } = setup({ maxSessionsPerOwner: 500 });
    const ids = new Set<string>();
    for (let i = 0; i < 300; i++) ids.add((await manager.initiate('paste', 'default', A, never)).session_id);
    expect(ids.size).toBe(300);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
    manager.close();
  });

  it('binds a session to the peer process: its reconnect finds it; other processes, uids, a reused pid and other connections do not', async () => {
    let startTime = 'boot-1';
    const { manager } = setup({ processStartTime: () => startTime });
    const { session_id } = await manager.initiate('dev', 'default', A, never);
    // The client's idle close and reconnect: a new connection from the same process.
    expect(await manager.poll(session_id, { ...A, connectionId: 99 })).toEqual({ status: 'pending', pollIntervalMs: 5000 });
    expect(await codeOf(manager.poll(session_id, { ...A, pid: 4243 }))).toBe('SESSION_NOT_FOUND');
    expect(await codeOf(manager.poll(session_id, { ...A, uid: 1001 }))).toBe('SESSION_NOT_FOUND');
    expect(await codeOf(manager.cancel(session_id, { ...A, pid: 4243 }))).toBe('SESSION_NOT_FOUND');
    startTime = 'boot-2'; // the pid now belongs to a later process
    expect(await codeOf(manager.poll(session_id, A))).toBe('SESSION_NOT_FOUND');
    startTime = 'boot-1';
    expect(await manager.poll(session_id, A)).toMatchObject({ status: 'pending' });

    // Without peer credentials the connection is the owner.
    const anon: PeerIdentity = { connectionId: 7, pid: null, uid: null };
    const s2 = await manager.initiate('dev', 'default', anon, never);
    expect(await manager.poll(s2.session_id, anon)).toMatchObject({ status: 'pending' });
    expect(await codeOf(manager.poll(s2.session_id, { ...anon, connectionId: 8 }))).toBe('SESSION_NOT_FOUND');
    expect(await codeOf(manager.poll(s2.session_id, A))).toBe('SESSION_NOT_FOUND');
    manager.close();
  });

  it('consumes a code-paste session before the exchange starts; a failed exchange still consumes it', async () => {
    const { manager, flows, tokens } = setup();
    const { session_id } = await manager.initiate('paste', 'default', A, never);
    let fail!: (e: Error) => void;
    flows.last.exchangeWith = () => new Promise((_, reject) => (fail = reject));
    const first = manager.exchange(session_id, 'code-1', A, never);
    // A second attempt while the first is still talking to the provider.
    expect(await codeOf(manager.exchange(session_id, 'code-2', A, never))).toBe('SESSION_ALREADY_USED');
    fail(new CredproxyError('EXCHANGE_FAILED', 'paste code exchange failed: invalid_grant'));
    expect(await codeOf(first)).toBe('EXCHANGE_FAILED');
    expect(await codeOf(manager.exchange(session_id, 'code-3', A, never))).toBe('SESSION_ALREADY_USED');
    expect(flows.last.exchanged).toEqual(['code-1']);
    expect(tokens.tokens.size).toBe(0);
    manager.close();
  });

  it('stores the full token of a successful exchange and answers it sanitized', async () => {
    const { manager, tokens, flows } = setup();
    const { session_id } = await manager.initiate('paste', 'work', A, never);
    const answer = await manager.exchange(session_id, 'the-code', A, never);
    expect(answer).toEqual({ access_token: 'at-1', expiry: expect.any(Number), token_type: 'Bearer', id_token: 'idt' });
    expect(await tokens.getToken('paste', 'work')).toMatchObject({ refresh_token: 'rt-secret-1', access_token: 'at-1' });
    expect(await codeOf(manager.exchange(session_id, 'the-code', A, never))).toBe('SESSION_ALREADY_USED');
    expect(flows.last.stopped).toBe(true);
    manager.close();
  });

  it('stores a login under the refresh lock: a refresh holding it finishes first, then the login wins', async () => {
    const { manager, tokens } = setup();
    const { session_id } = await manager.initiate('paste', 'work', A, never);
    // A refresh of the old token is in flight and holds the cross-process lock.
    expect(await tokens.acquireRefreshLock('paste', { bucket: 'work' })).toBe(true);
    let done = false;
    const exchanged = manager.exchange(session_id, 'the-code', A, never).then((t) => {
      done = true;
      return t;
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false); // waiting for the lock, nothing stored yet
    expect(await tokens.getToken('paste', 'work')).toBeNull();
    await tokens.saveToken('paste', { access_token: 'old-refreshed', expiry: 1, refresh_token: 'old-rt' }, 'work');
    await tokens.releaseRefreshLock('paste', 'work');
    await exchanged;
    expect(await tokens.getToken('paste', 'work')).toMatchObject({ access_token: 'at-1', refresh_token: 'rt-secret-1' });
    manager.close();
  });

  it('answers pending at the current interval, then the outcome once, then SESSION_ALREADY_USED', async () => {
    const { manager, tokens, flows } = setup();
    const { session_id, pollIntervalMs } = await manager.initiate('dev', 'default', A, never);
    expect(pollIntervalMs).toBe(5000);
    flows.last.interval = 10_000; // the provider said slow_down
    expect(await manager.poll(session_id, A)).toEqual({ status: 'pending', pollIntervalMs: 10_000 });
    flows.last.settle({ ok: true, token: fullToken() });
    await new Promise((r) => setImmediate(r));
    // Stored before anyone polls: the user approved, the token is theirs.
    expect((await tokens.getToken('dev'))?.refresh_token).toBe('rt-secret-1');
    const done = await manager.poll(session_id, A);
    expect(done).toMatchObject({ status: 'complete', access_token: 'at-1' });
    expect(done).not.toHaveProperty('refresh_token');
    expect(await codeOf(manager.poll(session_id, A))).toBe('SESSION_ALREADY_USED');
    expect(flows.last.stopped).toBe(true);
    manager.close();
  });

  it('reports a failed background flow as a poll status, and a token that could not be stored as INTERNAL_ERROR', async () => {
    const { manager, flows, tokens } = setup();
    const denied = await manager.initiate('dev', 'default', A, never);
    flows.last.settle({ ok: false, code: 'EXCHANGE_FAILED', error: 'the dev login was denied' });
    await new Promise((r) => setImmediate(r));
    expect(await manager.poll(denied.session_id, A)).toEqual({ status: 'error', code: 'EXCHANGE_FAILED', error: 'the dev login was denied' });

    tokens.saveToken = async () => {
      throw new CredproxyError('STORE_UNAVAILABLE', 'keyring locked');
    };
    const s = await manager.initiate('loop', 'default', A, never);
    flows.last.settle({ ok: true, token: fullToken() });
    await new Promise((r) => setImmediate(r));
    expect(await manager.poll(s.session_id, A)).toEqual({ status: 'error', code: 'INTERNAL_ERROR', error: 'the login succeeded but the token could not be stored (STORE_UNAVAILABLE)' });
    manager.close();
  });

  it('names the right op when the wrong one is used for the flow', async () => {
    const { manager } = setup();
    const paste = await manager.initiate('paste', 'default', A, never);
    const dev = await manager.initiate('dev', 'default', A, never);
    const loop = await manager.initiate('loop', 'default', A, never);
    await expect(manager.poll(paste.session_id, A)).rejects.toMatchObject({ code: 'INVALID_REQUEST', message: 'a pkce_redirect session is completed with oauth_exchange, not oauth_poll' });
    await expect(manager.exchange(dev.session_id, 'c', A, never)).rejects.toMatchObject({ code: 'INVALID_REQUEST', message: 'a device_code session is completed with oauth_poll, not oauth_exchange' });
    await expect(manager.exchange(loop.session_id, 'c', A, never)).rejects.toMatchObject({ code: 'INVALID_REQUEST', message: 'a browser_redirect session is completed with oauth_poll, not oauth_exchange' });
    // The wrong op does not consume anything.
    expect(await manager.poll(dev.session_id, A)).toMatchObject({ status: 'pending' });
    manager.close();
  });

  it('expires sessions: SESSION_EXPIRED and the flow stopped; after the sweep the id is unknown', async () => {
    const { manager, flows, clock } = setup({ timeoutMs: 10 * 60_000 });
    const paste = await manager.initiate('paste', 'default', A, never);
    const dev = await manager.initiate('dev', 'default', A, never);
    const devFlow = flows.last;
    clock.advance(10 * 60_000 - 1);
    expect(await manager.poll(dev.session_id, A)).toMatchObject({ status: 'pending' });
    clock.advance(1);
    expect(await codeOf(manager.exchange(paste.session_id, 'c', A, never))).toBe('SESSION_EXPIRED');
    expect(await codeOf(manager.poll(dev.session_id, A))).toBe('SESSION_EXPIRED');
    expect(devFlow.stopped).toBe(true);
    expect(await codeOf(manager.poll(dev.session_id, A))).toBe('SESSION_EXPIRED');
    manager.sweep();
    expect(manager.size).toBe(0);
    expect(await codeOf(manager.poll(dev.session_id, A))).toBe('SESSION_NOT_FOUND');
    manager.close();
  });

  it('still hands out an outcome reached before the expiry', async () => {
    const { manager, flows, clock } = setup();
    const dev = await manager.initiate('dev', 'default', A, never);
    flows.last.settle({ ok: true, token: fullToken() });
    await new Promise((r) => setImmediate(r));
    clock.advance(11 * 60_000);
    expect(await manager.poll(dev.session_id, A)).toMatchObject({ status: 'complete' });
    manager.close();
  });

  it('stops background polling and listeners at the expiry even when nobody asks', async () => {
    const { manager, flows } = setup({ timeoutMs: 80, now: Date.now });
    await manager.initiate('dev', 'default', A, never);
    await manager.initiate('loop', 'default', A, never);
    expect(flows.started.map((f) => f.stopped)).toEqual([false, false]);
    await new Promise((r) => setTimeout(r, 150));
    expect(flows.started.map((f) => f.stopped)).toEqual([true, true]);
    manager.close();
  });

  it('stops an abandoned login at once: its connection closed (no peer credentials) or its process exited; a live process keeps it', async () => {
    const starts = new Map<number, string>([[100, 'boot-100'], [200, 'boot-200']]);
    const { manager, flows } = setup({ maxLivePerSandbox: 2, processStartTime: (pid) => starts.get(pid) ?? null });
    const P100 = { ...A, pid: 100 };
    const P200 = { ...A, pid: 200 };
    const conn7 = { connectionId: 7, pid: null, uid: null };
    await manager.initiate('dev', 'default', P100, never);
    await manager.initiate('loop', 'default', P200, never);
    await manager.initiate('dev', 'default', conn7, never);
    const [f100, f200, f7] = flows.started;
    // The sandbox's two slots are taken.
    expect(await codeOf(manager.initiate('dev', 'default', { ...A, pid: 300 }, never))).toBe('RATE_LIMITED');
    // Process 100's connection closes while it still runs (an idle close): its login goes on.
    manager.connectionClosed(P100);
    expect(f100!.stopped).toBe(false);
    // Process 100 exits: the next close (any connection) or sweep stops its polling and frees the slot.
    starts.delete(100);
    manager.connectionClosed({ connectionId: 99, pid: 555, uid: 1000 });
    expect(f100!.stopped).toBe(true);
    expect(f200!.stopped).toBe(false);
    expect(f7!.stopped).toBe(false);
    starts.set(300, 'boot-300');
    expect(await codeOf(manager.initiate('dev', 'default', { ...A, pid: 300 }, never))).toBe('OK');
    // A pid reused by another process is not the owner.
    starts.set(200, 'boot-200-again');
    manager.sweep();
    expect(f200!.stopped).toBe(true);
    // Without peer credentials the owner is the connection.
    manager.connectionClosed({ connectionId: 8, pid: null, uid: null });
    expect(f7!.stopped).toBe(false);
    manager.connectionClosed(conn7);
    expect(f7!.stopped).toBe(true);
    manager.close();
  });

  it('oauth_cancel drops the session at once and stops its flow', async () => {
    const { manager, flows, tokens } = setup();
    const dev = await manager.initiate('dev', 'default', A, never);
    await manager.cancel(dev.session_id, { ...A, connectionId: 5 });
    expect(flows.last.stopped).toBe(true);
    expect(manager.size).toBe(0);
    expect(await codeOf(manager.poll(dev.session_id, A))).toBe('SESSION_NOT_FOUND');
    // An outcome arriving after the cancel is ignored.
    flows.last.settle({ ok: true, token: fullToken() });
    await new Promise((r) => setImmediate(r));
    expect(tokens.tokens.size).toBe(0);
  });

  it('caps sessions per process and overall, counting initiations still waiting for the provider', async () => {
    const { manager, flows } = setup({ maxSessionsPerOwner: 3, maxSessions: 5 });
    let open!: () => void;
    flows.gate = new Promise((r) => (open = r));
    const pending = [1, 2, 3, 4].map(() => manager.initiate('dev', 'default', A, never));
    flows.gate = null;
    open();
    const settled = await Promise.allSettled(pending);
    const ok = settled.filter((r) => r.status === 'fulfilled').map((r) => r.value.session_id);
    expect(ok).toHaveLength(3);
    expect(settled.filter((r) => r.status === 'rejected').map((r) => (r.reason as CredproxyError).code)).toEqual(['RATE_LIMITED']);
    const err = (await manager.initiate('paste', 'default', A, never).catch((e: unknown) => e)) as CredproxyError;
    expect(err).toMatchObject({ code: 'RATE_LIMITED', retryAfter: 60 });
    // Another process still gets its own sessions, until the overall cap.
    const B = { ...A, pid: 5555 };
    const C = { ...A, pid: 6666 };
    expect(await codeOf(manager.initiate('dev', 'default', B, never))).toBe('OK');
    expect(await codeOf(manager.initiate('dev', 'default', B, never))).toBe('OK');
    expect(await codeOf(manager.initiate('dev', 'default', C, never))).toBe('RATE_LIMITED');
    // Cancelling one frees its slot, for its owner and overall.
    await manager.cancel(ok[0]!, A);
    expect(await codeOf(manager.initiate('dev', 'default', C, never))).toBe('OK');
    expect(await codeOf(manager.initiate('dev', 'default', A, never))).toBe('RATE_LIMITED');
    manager.close();
  });

  it('caps logins in progress per sandbox (uid), so forking new processes gains nothing; a used or cancelled one frees its slot', async () => {
    const { manager } = setup({ maxLivePerSandbox: 4 });
    const ids: string[] = [];
    for (let pid = 100; pid < 104; pid++) ids.push((await manager.initiate('dev', 'default', { ...A, pid }, never)).session_id);
    // A fifth process of the same sandbox is refused, whatever its pid.
    expect(await codeOf(manager.initiate('dev', 'default', { ...A, pid: 999 }, never))).toBe('RATE_LIMITED');
    await manager.cancel(ids[0]!, { ...A, pid: 100 });
    expect(await codeOf(manager.initiate('dev', 'default', { ...A, pid: 999 }, never))).toBe('OK');
    // Another uid is another sandbox.
    expect(await codeOf(manager.initiate('dev', 'default', { ...A, uid: 2000 }, never))).toBe('OK');
    manager.close();
  });

  it('frees a slot when an initiation fails, and refuses logins after close', async () => {
    const { manager, flows } = setup({ maxSessionsPerOwner: 1 });
    expect(await codeOf(manager.initiate('nope', 'default', A, never))).toBe('PROVIDER_NOT_FOUND');
    const failing: FlowStarter = async () => {
      throw new CredproxyError('INTERNAL_ERROR', 'dev device authorization failed: invalid_client');
    };
    const m2 = setup({ maxSessionsPerOwner: 1, startFlow: failing }).manager;
    expect(await codeOf(m2.initiate('dev', 'default', A, never))).toBe('INTERNAL_ERROR');
    expect(await codeOf(m2.initiate('dev', 'default', A, never))).toBe('INTERNAL_ERROR'); // not RATE_LIMITED
    const s = await manager.initiate('dev', 'default', A, never);
    expect(await codeOf(manager.initiate('dev', 'default', A, never))).toBe('RATE_LIMITED');
    await manager.cancel(s.session_id, A);
    const again = await manager.initiate('loop', 'default', A, never);
    manager.close();
    expect(flows.last.stopped).toBe(true);
    expect(await codeOf(manager.poll(again.session_id, A))).toBe('SESSION_NOT_FOUND');
    expect(await codeOf(manager.initiate('dev', 'default', A, never))).toBe('INTERNAL_ERROR');
  });

  it('drops a session whose initiate request was cancelled while the flow started', async () => {
    const { manager, flows } = setup({ maxSessionsPerOwner: 1 });
    let open!: () => void;
    flows.gate = new Promise((r) => (open = r));
    const ac = new AbortController();
    const p = codeOf(manager.initiate('dev', 'default', A, ac.signal));
    ac.abort();
    flows.gate = null;
    open();
    expect(await p).toBe('INTERNAL_ERROR');
    expect(flows.last.stopped).toBe(true);
    expect(manager.size).toBe(0);
    expect(await codeOf(manager.initiate('dev', 'default', A, never))).toBe('OK');
    manager.close();
  });

  it('logs at most the first 8 characters of a session id', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const { manager, flows } = setup({ logger: pino({ level: 'debug' }, sink) });
    const paste = await manager.initiate('paste', 'default', A, never);
    await manager.exchange(paste.session_id, 'code', A, never);
    const dev = await manager.initiate('dev', 'default', A, never);
    flows.last.settle({ ok: false, code: 'EXCHANGE_FAILED', error: 'denied' });
    await new Promise((r) => setImmediate(r));
    const loop = await manager.initiate('loop', 'default', A, never);
    await manager.cancel(loop.session_id, A);
    const text = lines.join('');
    for (const id of [paste.session_id, dev.session_id, loop.session_id]) {
      expect(text).toContain(`"session":"${id.slice(0, 8)}"`);
      expect(text).not.toContain(id.slice(0, 9));
    }
    expect(text).toMatch(/login session started/);
    expect(text).toMatch(/login completed/);
    expect(text).toMatch(/login failed/);
    expect(text).not.toContain('rt-secret-1');
    manager.close();
  });

  it('tells a pid apart from a later process reusing it by the start time in /proc', async () => {
    const mine = procStartTime(process.pid);
    expect(mine).toMatch(/^\d+$/);
    const child = await run(process.execPath, ['-e', 'console.log(process.pid)']);
    const gone = Number(child.stdout.trim());
    expect(procStartTime(gone)).toBeNull(); // exited
    // A zombie (exited, not yet reaped) is gone too.
    // (`sleep 30`, exec'd over the shell, never reaps the shell's child. The child outlives the shell's own
    // code by a second: one that exited at once could be reaped by the shell before its exec, on a loaded machine.)
    const parent = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const zpid = Number(await new Promise<string>((r) => parent.stdout.once('data', (d: Buffer) => r(d.toString()))));
    try {
      let stat = '';
      for (let i = 0; i < 400 && !/\) Z /.test(stat); i++) {
        await new Promise((r) => setTimeout(r, 25));
        stat = readFileSync(`/proc/${zpid}/stat`, 'utf8');
      }
      expect(stat).toMatch(/\) Z /);
      expect(procStartTime(zpid)).toBeNull();
    } finally {
      parent.kill();
    }
    expect(ownerKey({ ...A, pid: gone }, procStartTime)).toBe(`proc:1000:${gone}:-`);
    expect(ownerKey({ ...A, pid: process.pid }, procStartTime)).toBe(`proc:1000:${process.pid}:${mine}`);
    expect(ownerKey({ connectionId: 3, pid: null, uid: null })).toBe('conn:3');
  });

  it('reads CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS', () => {
    expect(sessionTimeoutFromEnv({})).toBeUndefined();
    expect(sessionTimeoutFromEnv({ CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS: '90' })).toBe(90_000);
    for (const bad of ['0', '-5', '1.5', 'abc', '86401', '1e3']) {
      expect(() => sessionTimeoutFromEnv({ CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS: bad })).toThrow(/whole number of seconds/);
    }
  });

  it('never keeps a process alive: abandoned sessions and their loopback listener are unref\'d', async () => {
    const started = Date.now();
    const child = await run(process.execPath, ['--import', 'tsx', new URL('./fixtures/abandoned-sessions-child.ts', import.meta.url).pathname], { timeout: 15_000 });
    const [port, size] = child.stdout.trim().split(' ').map(Number);
    expect(size).toBe(2);
    expect(port).toBeGreaterThan(0);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('asks for one full collection after a sweep that drops 1,000 sessions or more, not after smaller ones', async () => {
    let calls = 0;
    let now = 0;
    const manager = new LoginSessionManager({
      tokens: new MemoryTokenStore(),
      providers: new ProviderRegistry({ presets: {}, config: { providers: PROVIDERS } }),
      now: () => now,
      afterBulkSweep: () => calls++,
      maxLivePerSandbox: 1_000_000,
      maxStartsPerMinute: 1_000_000,
    });
    const fill = async (n: number, from: number): Promise<void> => {
      for (let i = 0; i < n; i++) await manager.initiate('paste', 'default', { connectionId: from + i, pid: null, uid: null }, never);
    };
    await fill(999, 0);
    now += 11 * 60_000;
    manager.sweep();
    await new Promise((r) => setImmediate(r));
    expect(manager.size).toBe(0);
    expect(calls).toBe(0);
    await fill(1000, 1000);
    now += 11 * 60_000;
    manager.sweep();
    expect(calls).toBe(0); // deferred: never inside the request that triggered the sweep
    await new Promise((r) => setImmediate(r));
    expect(calls).toBe(1);
    manager.close();
  });

  it('returns memory to idle after 10,000 abandoned sessions are swept', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    let now = 0;
    // Real code-paste flows (explicit endpoints: no network), one per connection as abandoned clients leave them.
    const manager = new LoginSessionManager({
      tokens: new MemoryTokenStore(),
      providers: new ProviderRegistry({ presets: {}, config: { providers: PROVIDERS } }),
      now: () => now,
      maxLivePerSandbox: 1_000_000,
      maxStartsPerMinute: 1_000_000,
    });
    await manager.initiate('paste', 'default', A, never); // warm caches (provider instance, library state)
    manager.sweep();
    now += 11 * 60_000;
    manager.sweep();
    gc();
    const idle = process.memoryUsage().heapUsed;
    for (let i = 0; i < 10_000; i++) await manager.initiate('paste', 'default', { connectionId: i, pid: null, uid: null }, never);
    expect(manager.size).toBe(10_000);
    gc();
    const busy = process.memoryUsage().heapUsed;
    now += 10 * 60_000;
    manager.sweep();
    expect(manager.size).toBe(0);
    gc();
    const after = process.memoryUsage().heapUsed;
    const held = busy - idle;
    expect(held).toBeGreaterThan(2 * 1024 * 1024); // the sessions really held memory...
    expect(after - idle).toBeLessThan(Math.max(held * 0.1, 1024 * 1024)); // ...and it is back
    manager.close();
  }, 30_000);
});
