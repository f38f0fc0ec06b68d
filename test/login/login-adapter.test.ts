import { describe, expect, it } from 'vitest';
import { runLogin, type LoginIO, type LoginOps } from '../../src/client/login-adapter.js';
import { CredproxyError } from '../../src/errors.js';
import type { FlowOutcome, FlowStarter } from '../../src/login/flows/index.js';
import { localLoginOps } from '../../src/login/local-ops.js';
import { LoginSessionManager } from '../../src/login/session-manager.js';
import { ProviderRegistry } from '../../src/oauth/registry.js';
import type { OAuthToken } from '../../src/store/types.js';
import { MemoryTokenStore } from '../support/memory-stores.js';

/**
 * The adapter driven against the real session manager (in process, as the
 * host CLI uses it) with scripted flows: what it prints, when it polls, and
 * that every early end cancels the session on the host.
 */
const endpoints = { authorization_endpoint: 'https://auth.example.invalid/authorize', token_endpoint: 'https://auth.example.invalid/token', client_id: 'c' };

function token(): OAuthToken {
  return { access_token: 'at-adapter', refresh_token: 'rt-adapter', expiry: Math.floor(Date.now() / 1000) + 600, token_type: 'Bearer' };
}

interface Scripted {
  stopped: boolean;
  settle(o: FlowOutcome): void;
  exchanged: string[];
}

function harness(options: { intervalMs?: number; gate?: Promise<void> } = {}) {
  const flows: Scripted[] = [];
  const starter: FlowStarter = async (provider, ctx) => {
    await options.gate;
    let settle!: (o: FlowOutcome) => void;
    const outcome = new Promise<FlowOutcome>((r) => (settle = r));
    const f: Scripted = { stopped: false, settle, exchanged: [] };
    ctx.stop.addEventListener('abort', () => (f.stopped = true));
    flows.push(f);
    if (provider.flow === 'pkce_redirect') {
      return {
        start: { flow_type: 'pkce_redirect', auth_url: 'https://auth.example.invalid/authorize?x=1' },
        pollIntervalMs: () => 0,
        exchange: async (code) => {
          f.exchanged.push(code);
          if (code !== 'good-code') throw new CredproxyError('EXCHANGE_FAILED', 'paste code exchange failed: invalid_grant');
          return token();
        },
      };
    }
    return {
      start: { flow_type: 'device_code', verification_url: 'https://auth.example.invalid/device', user_code: 'ABCD-1234', pollIntervalMs: options.intervalMs ?? 5000 },
      pollIntervalMs: () => options.intervalMs ?? 5000,
      outcome,
    };
  };
  const tokens = new MemoryTokenStore();
  const manager = new LoginSessionManager({
    tokens,
    providers: new ProviderRegistry({
      presets: {},
      config: { providers: { paste: { flow: 'pkce_redirect', ...endpoints }, dev: { flow: 'device_code', ...endpoints, device_authorization_endpoint: 'https://auth.example.invalid/device' } } },
    }),
    startFlow: starter,
  });
  const abort = new AbortController();
  const calls: string[] = [];
  // Like a host behind the socket, the manager never sees the user's abort: only oauth_cancel.
  const inner = localLoginOps(manager, new AbortController().signal);
  // Record which operations the adapter used, in order.
  const ops: LoginOps = {
    initiate: (p, b) => (calls.push('initiate'), inner.initiate(p, b)),
    exchange: (s, c) => (calls.push('exchange'), inner.exchange(s, c)),
    poll: (s) => (calls.push('poll'), inner.poll(s)),
    cancel: (s) => (calls.push('cancel'), inner.cancel(s)),
  };
  const out: string[] = [];
  const sleeps: number[] = [];
  const io = (over: Partial<LoginIO> = {}): LoginIO => ({
    output: { write: (t: string) => out.push(t), isTTY: false },
    prompt: () => Promise.reject(new Error('no prompt expected')),
    signal: abort.signal,
    sleep: async (ms) => {
      sleeps.push(ms);
      await new Promise((r) => setTimeout(r, 5));
      if (abort.signal.aborted) throw new CredproxyError('CANCELLED', 'login cancelled');
    },
    ...over,
  });
  return { manager, flows, tokens, abort, calls, out, sleeps, io, ops };
}

describe('login adapter', () => {
  it('code paste: shows the URL, asks for the code, exchanges it and returns the sanitized token', async () => {
    const h = harness();
    const questions: string[] = [];
    const t = await runLogin(h.ops, 'paste', 'default', h.io({ prompt: async (q) => (questions.push(q), 'good-code') }));
    expect(t).toEqual({ access_token: 'at-adapter', expiry: expect.any(Number), token_type: 'Bearer' });
    expect(h.out.join('')).toContain('open this URL in your browser to log in to paste:\n\n  https://auth.example.invalid/authorize?x=1\n');
    expect(questions).toEqual(['credproxy: paste the code the page shows you, then press Enter: ']);
    expect(h.calls).toEqual(['initiate', 'exchange']);
    expect((await h.tokens.getToken('paste'))?.refresh_token).toBe('rt-adapter');
  });

  it('device code: shows the URL and user code, polls at the advised interval with a plain waiting line, and returns the token', async () => {
    const h = harness({ intervalMs: 876 });
    let polls = 0;
    const done = runLogin(h.ops, 'dev', 'default', h.io({
      sleep: async (ms) => {
        h.sleeps.push(ms);
        if (++polls === 3) h.flows[0]!.settle({ ok: true, token: token() });
        await new Promise((r) => setTimeout(r, 5));
      },
    }));
    const t = await done;
    expect(t.access_token).toBe('at-adapter');
    expect(t).not.toHaveProperty('refresh_token');
    expect(h.sleeps).toEqual([876, 876, 876]);
    const text = h.out.join('');
    expect(text).toContain('credproxy: to log in to dev, open https://auth.example.invalid/device and enter the code: ABCD-1234\n');
    expect(text).toContain('credproxy: waiting for the login to finish in the browser...\n');
    expect(text).not.toContain('\r');
  });

  it('in process (the host CLI), polling the session manager is capped at 1 s whatever the provider advises', async () => {
    const h = harness({ intervalMs: 5000 });
    const done = runLogin(h.ops, 'dev', 'default', h.io({
      sleep: async (ms) => {
        h.sleeps.push(ms);
        h.flows[0]!.settle({ ok: true, token: token() });
      },
    }));
    await done;
    expect(h.sleeps.length).toBeGreaterThan(0);
    expect(new Set(h.sleeps)).toEqual(new Set([1000]));
  });

  it('draws a spinner on a terminal and clears it at the end', async () => {
    const h = harness({ intervalMs: 100 });
    const tty: string[] = [];
    const t = runLogin(h.ops, 'dev', 'default', h.io({
      output: { write: (s: string) => tty.push(s), isTTY: true },
      sleep: async () => {
        await new Promise((r) => setTimeout(r, 300));
        h.flows[0]!.settle({ ok: true, token: token() });
      },
    }));
    await t;
    const text = tty.join('');
    expect(text).toMatch(/\r[|/\\-] waiting for the login to finish in the browser \(\d+ s, Ctrl\+C to cancel\)/);
    expect(text.endsWith('\r\x1b[2K')).toBe(true);
  });

  it('a failed flow rejects with its code and message', async () => {
    const h = harness();
    const done = runLogin(h.ops, 'dev', 'default', h.io());
    await new Promise((r) => setTimeout(r, 20));
    h.flows[0]!.settle({ ok: false, code: 'EXCHANGE_FAILED', error: 'the dev login was denied' });
    await expect(done).rejects.toMatchObject({ code: 'EXCHANGE_FAILED', message: 'the dev login was denied' });
  });

  it('Ctrl+C while polling cancels the session on the host before rejecting with CANCELLED', async () => {
    const h = harness({ intervalMs: 10 });
    const done = runLogin(h.ops, 'dev', 'default', h.io());
    await new Promise((r) => setTimeout(r, 50));
    expect(h.flows[0]!.stopped).toBe(false);
    h.abort.abort();
    await expect(done).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(h.calls.at(-1)).toBe('cancel');
    expect(h.flows[0]!.stopped).toBe(true);
    expect(h.manager.size).toBe(0);
  });

  it('Ctrl+C at the code prompt cancels the session', async () => {
    const h = harness();
    const done = runLogin(h.ops, 'paste', 'default', h.io({
      prompt: (_q, signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('closed')))),
    }));
    await new Promise((r) => setTimeout(r, 20));
    h.abort.abort();
    await expect(done).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(h.calls).toEqual(['initiate', 'cancel']);
    expect(h.manager.size).toBe(0);
  });

  it('Ctrl+C while the host is still starting the session cancels it once it exists', async () => {
    let open!: () => void;
    const h = harness({ gate: new Promise((r) => (open = r)) });
    const done = runLogin(h.ops, 'dev', 'default', h.io());
    h.abort.abort();
    await new Promise((r) => setTimeout(r, 20));
    open();
    await expect(done).rejects.toMatchObject({ code: 'CANCELLED' });
    expect(h.calls).toEqual(['initiate', 'cancel']);
    expect(h.flows[0]!.stopped).toBe(true);
    expect(h.manager.size).toBe(0);
  });

  it('when no code comes (closed input), the session is cancelled instead of left to expire', async () => {
    const h = harness();
    const done = runLogin(h.ops, 'paste', 'default', h.io({ prompt: async () => Promise.reject(new CredproxyError('INVALID_REQUEST', 'no code was entered')) }));
    await expect(done).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    expect(h.calls).toEqual(['initiate', 'cancel']);
    expect(h.manager.size).toBe(0);
  });

  it('a wrong code fails the exchange (EXCHANGE_FAILED) and leaves nothing stored', async () => {
    const h = harness();
    await expect(runLogin(h.ops, 'paste', 'default', h.io({ prompt: async () => 'bad-code' }))).rejects.toMatchObject({ code: 'EXCHANGE_FAILED' });
    expect(h.flows[0]!.exchanged).toEqual(['bad-code']);
    expect(h.tokens.tokens.size).toBe(0);
  });
});
