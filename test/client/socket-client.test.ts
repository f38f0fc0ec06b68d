import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CONNECTION_LOST_MESSAGE, ProxySocketClient, type ProxySocketClientOptions } from '../../src/client/index.js';
import { CredproxyError } from '../../src/errors.js';
import { deferred, FakeProxy, type FakeProxyOptions, type Reply } from '../support/fake-proxy.js';
import { rawFrame } from '../support/raw-client.js';
import { expectValidClientFrames } from './client-frames.js';

const proxies: FakeProxy[] = [];
const clients: ProxySocketClient[] = [];
const dirs: string[] = [];

async function startProxy(options: FakeProxyOptions = {}): Promise<FakeProxy> {
  const p = await FakeProxy.start(options);
  proxies.push(p);
  return p;
}

function client(options: ProxySocketClientOptions): ProxySocketClient {
  const c = new ProxySocketClient(options);
  clients.push(c);
  return c;
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cpclient-'));
  dirs.push(d);
  return d;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves with the rejection of `p` (fails the test if p resolves). */
async function rejectionOf(p: Promise<unknown>): Promise<CredproxyError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(CredproxyError);
    return err as CredproxyError;
  }
  throw new Error('expected a rejection');
}

/** Settlement state without waiting for it. */
function track(p: Promise<unknown>): { settled: boolean } {
  const state = { settled: false };
  p.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}

afterEach(async () => {
  vi.useRealTimers();
  for (const p of proxies) expectValidClientFrames(p);
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('connection set-up', () => {
  it('connects lazily and sends the handshake with the capability token first', async () => {
    const proxy = await startProxy({ capabilityToken: 'c0ffee', handler: () => ({ data: { providers: ['anthropic'] } }) });
    const c = client({ socket: proxy.address, capabilityToken: 'c0ffee' });
    await sleep(50);
    expect(proxy.connections).toHaveLength(0);

    await expect(c.request('list_providers', {})).resolves.toEqual({ providers: ['anthropic'] });
    const conn = await proxy.connection(0);
    expect(conn.frames[0]).toEqual({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 2, capabilityToken: 'c0ffee' } });
    expect(conn.frames[1]).toEqual({ v: 1, id: expect.any(String), op: 'list_providers', payload: {} });
    expect(proxy.connections).toHaveLength(1);
  });

  it('omits the capability token when it has none', async () => {
    const proxy = await startProxy({ handler: () => ({ data: { keys: [] } }) });
    const c = client({ socket: proxy.address });
    await c.request('list_api_keys', {});
    expect(proxy.connections[0]!.frames[0]).toEqual({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 2 } });
  });

  it('shares one connection and one handshake among concurrent first calls', async () => {
    const proxy = await startProxy({ handler: ({ payload }) => ({ data: { buckets: [String(payload.provider)] } }) });
    const c = client({ socket: proxy.address });
    const answers = await Promise.all(['a', 'b', 'c'].map((provider) => c.request('list_buckets', { provider })));
    expect(answers).toEqual([{ buckets: ['a'] }, { buckets: ['b'] }, { buckets: ['c'] }]);
    expect(proxy.connections).toHaveLength(1);
    expect(proxy.connections[0]!.frames.filter((f) => f.op === 'handshake')).toHaveLength(1);
  });

  it('surfaces an UNAUTHORIZED handshake with a hint, and tries again on the next call', async () => {
    const proxy = await startProxy({ capabilityToken: 'right' });
    const c = client({ socket: proxy.address, capabilityToken: 'wrong' });
    const err = await rejectionOf(c.request('list_providers', {}));
    expect(err.code).toBe('UNAUTHORIZED');
    expect(err.message).toContain('CREDPROXY_TOKEN');
    expect(err.message).not.toContain('wrong');
    const again = await rejectionOf(c.request('list_providers', {}));
    expect(again.code).toBe('UNAUTHORIZED');
    expect(proxy.connections).toHaveLength(2);

    const tokenless = client({ socket: proxy.address });
    expect((await rejectionOf(tokenless.request('list_providers', {}))).code).toBe('UNAUTHORIZED');
  });

  it('surfaces UNKNOWN_VERSION', async () => {
    const proxy = await startProxy({
      handshake: () => ({ reply: { v: 1, op: 'handshake', ok: false, code: 'UNKNOWN_VERSION', error: 'only version 7' }, close: true }),
    });
    const err = await rejectionOf(client({ socket: proxy.address }).request('list_providers', {}));
    expect(err.code).toBe('UNKNOWN_VERSION');
    expect(err.message).toContain('only version 7');
    expect(err.message).toContain('same credproxy version');
  });

  it('refuses a handshake answer it does not understand', async () => {
    const proxy = await startProxy({ handshake: () => ({ reply: { v: 1, op: 'handshake', ok: true, data: { version: 3 } }, close: false }) });
    const err = await rejectionOf(client({ socket: proxy.address }).request('list_providers', {}));
    expect(err.code).toBe('CONNECTION_LOST');
    expect(err.message).toContain('handshake');
    await proxy.connections[0]!.closed;
  });

  it('names the socket path when nothing is there, and connects once the proxy appears', async () => {
    const path = join(tempDir(), 'later.sock');
    const c = client({ socket: path });
    const err = await rejectionOf(c.request('list_providers', {}));
    expect(err.code).toBe('CONNECTION_LOST');
    expect(err.message).toContain(path);
    expect(err.message).toContain('does not exist');

    await startProxy({ path, handler: () => ({ data: { providers: [] } }) });
    await expect(c.request('list_providers', {})).resolves.toEqual({ providers: [] });
  });

  it('validates the payload before connecting', async () => {
    const proxy = await startProxy();
    const c = client({ socket: proxy.address });
    const err = await rejectionOf(c.request('get_token', { provider: 'bad name!' }));
    expect(err.code).toBe('INVALID_REQUEST');
    expect(err.message).toContain('provider');
    expect(err.message).not.toContain('bad name!');
    for (const op of ['nope', '__proto__', 'handshake']) {
      expect((await rejectionOf(c.request(op as 'list_providers', {}))).code).toBe('INVALID_REQUEST');
    }
    await sleep(30);
    expect(proxy.connections).toHaveLength(0);
  });

  it('sends the schema output: unknown fields and a refresh_token are dropped', async () => {
    const proxy = await startProxy({ handler: () => ({ data: {} }) });
    const c = client({ socket: proxy.address });
    const token = { access_token: 'at', expiry: 2_000_000_000, refresh_token: 'SECRET-RT' };
    await c.request('save_token', { provider: 'p', token, extra: 1 } as never);
    const conn = proxy.connections[0]!;
    expect(conn.frames[1]!.payload).toEqual({ provider: 'p', token: { access_token: 'at', expiry: 2_000_000_000 } });
    expect(conn.receivedText).not.toContain('SECRET-RT');
  });
});

describe('requests', () => {
  it('pipelines requests and matches answers arriving in another order', async () => {
    const gates = new Map<string, ReturnType<typeof deferred<Reply>>>();
    const proxy = await startProxy({
      handler: ({ payload }) => {
        const d = deferred<Reply>();
        gates.set(String(payload.name), d);
        return d.promise;
      },
    });
    const c = client({ socket: proxy.address });
    const names = ['one', 'two', 'three'];
    const calls = names.map((name) => c.request('get_api_key', { name }));
    const conn = await proxy.connection(0);
    await conn.waitForRequests(3);
    // All three reached the server before any was answered.
    expect(conn.requests.map((f) => (f.payload as { name: string }).name)).toEqual(names);
    const ids = conn.requests.map((f) => f.id as string);
    expect(new Set(ids).size).toBe(3);
    for (const id of ids) expect(id.length).toBeLessThanOrEqual(8);

    for (const name of [...names].reverse()) gates.get(name)!.resolve({ data: { key: `value-of-${name}` } });
    await expect(Promise.all(calls)).resolves.toEqual(names.map((n) => ({ key: `value-of-${n}` })));
  });

  it('turns error answers into CredproxyError with code, text and retryAfter', async () => {
    const proxy = await startProxy({
      handler: ({ op }) =>
        op === 'get_token' ? { code: 'RATE_LIMITED', error: 'slow down', retryAfter: 4 } : { code: 'REAUTH_REQUIRED', error: 'log in again' },
    });
    const c = client({ socket: proxy.address });
    const limited = await rejectionOf(c.request('get_token', { provider: 'p' }));
    expect([limited.code, limited.message, limited.retryAfter]).toEqual(['RATE_LIMITED', 'slow down', 4]);
    const reauth = await rejectionOf(c.request('refresh_token', { provider: 'p' }));
    expect([reauth.code, reauth.message, reauth.retryAfter]).toEqual(['REAUTH_REQUIRED', 'log in again', undefined]);
    // Error answers leave the connection usable.
    expect(proxy.connections).toHaveLength(1);
  });

  it('times out a request, sends cancel for it, and keeps the connection', async () => {
    const proxy = await startProxy({ handler: ({ op }) => (op === 'refresh_token' ? null : { data: { providers: ['x'] } }) });
    const c = client({ socket: proxy.address, requestTimeoutMs: 150 });
    const started = Date.now();
    const err = await rejectionOf(c.request('refresh_token', { provider: 'p' }));
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(err.code).toBe('TIMEOUT');
    expect(err.message).toContain('refresh_token');

    const conn = proxy.connections[0]!;
    const targetId = conn.requests[0]!.id;
    await conn.waitUntil(() => conn.requests.some((f) => f.op === 'cancel'), 'cancel frame');
    const cancel = conn.requests.find((f) => f.op === 'cancel')!;
    expect(cancel).toEqual({ v: 1, id: expect.any(String), op: 'cancel', payload: { targetId } });
    expect(cancel.id).not.toBe(targetId);

    // The cancel's own answer is consumed quietly; the same connection still serves.
    await expect(c.request('list_providers', {})).resolves.toEqual({ providers: ['x'] });
    expect(proxy.connections).toHaveLength(1);
    expect(conn.isClosed).toBe(false);
  });

  it('ignores the late answer of a timed-out request', async () => {
    const proxy = await startProxy({
      honourCancel: false,
      handler: async ({ op }) => {
        if (op === 'get_api_key') {
          await sleep(200);
          return { data: { key: 'late' } };
        }
        return { data: { keys: ['k'] } };
      },
    });
    const c = client({ socket: proxy.address, requestTimeoutMs: 60 });
    expect((await rejectionOf(c.request('get_api_key', { name: 'k' }))).code).toBe('TIMEOUT');
    const conn = proxy.connections[0]!;
    await conn.waitUntil(() => conn.inFlight.size === 0, 'late answer sent');
    await sleep(30);
    await expect(c.request('list_api_keys', {})).resolves.toEqual({ keys: ['k'] });
    expect(proxy.connections).toHaveLength(1);
  });

  it('rejects a message too large for one frame without sending it', async () => {
    const proxy = await startProxy({ handler: () => ({ data: {} }) });
    const c = client({ socket: proxy.address });
    await c.request('list_providers', {});
    const huge = { access_token: 'a'.repeat(70_000), expiry: 1 };
    expect((await rejectionOf(c.request('save_token', { provider: 'p', token: huge }))).code).toBe('INVALID_REQUEST');
    await expect(c.request('list_providers', {})).resolves.toEqual({});
    expect(proxy.connections[0]!.requests.map((f) => f.op)).toEqual(['list_providers', 'list_providers']);
  });
});

describe('idle close', () => {
  it('closes an idle connection itself and reconnects with a fresh handshake', async () => {
    const proxy = await startProxy({ capabilityToken: 't', handler: () => ({ data: { providers: [] } }) });
    const c = client({ socket: proxy.address, capabilityToken: 't', idleTimeoutMs: 120 });
    await c.request('list_providers', {});
    const first = proxy.connections[0]!;
    const idleStart = Date.now();
    await first.closed;
    expect(Date.now() - idleStart).toBeGreaterThanOrEqual(100);
    expect(first.closedByServer).toBe(false);

    await expect(c.request('list_providers', {})).resolves.toEqual({ providers: [] });
    expect(proxy.connections).toHaveLength(2);
    expect(proxy.connections[1]!.frames[0]).toMatchObject({ op: 'handshake', payload: { capabilityToken: 't' } });
  });

  it('does not count time with a request in flight as idle', async () => {
    const proxy = await startProxy({
      handler: async () => {
        await sleep(250);
        return { data: { keys: [] } };
      },
    });
    const c = client({ socket: proxy.address, idleTimeoutMs: 80 });
    await expect(c.request('list_api_keys', {})).resolves.toEqual({ keys: [] });
    expect(proxy.connections[0]!.isClosed).toBe(false);
    expect(proxy.connections).toHaveLength(1);
  });

  it('uses the SPEC defaults: 30 s per request, 5 min idle', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const proxy = await startProxy({ handler: () => null });
    const c = client({ socket: proxy.address });
    const call = c.request('get_token', { provider: 'p' });
    const state = track(call);
    const conn = await proxy.connection(0);
    await conn.waitForRequests(1);

    vi.advanceTimersByTime(29_999);
    await new Promise((r) => setImmediate(r));
    expect(state.settled).toBe(false);
    vi.advanceTimersByTime(1);
    expect((await rejectionOf(call)).code).toBe('TIMEOUT');
    await conn.waitUntil(() => conn.requests.some((f) => f.op === 'cancel'), 'cancel frame');

    vi.advanceTimersByTime(299_999);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(conn.isClosed).toBe(false);
    vi.advanceTimersByTime(1);
    await conn.closed;
    expect(conn.closedByServer).toBe(false);
  });
});

describe('connection loss', () => {
  const LOSSES: Array<[string, (send: (b: Buffer) => void, id: string) => void]> = [
    ['the server closes', () => undefined],
    ['a frame that is not JSON', (send) => send(rawFrame('{not json'))],
    ['a frame that is not an object', (send) => send(rawFrame('[1,2,3]'))],
    ['an oversized frame header', (send) => send(Buffer.from([0x7f, 0xff, 0xff, 0xff]))],
    ['an answer with an unknown id', (send) => send(rawFrame(JSON.stringify({ v: 1, id: 'zzz', ok: true, data: {} })))],
    ['an answer without an id', (send) => send(rawFrame(JSON.stringify({ v: 1, ok: false, code: 'INVALID_REQUEST', error: 'x' })))],
    ['an answer with an unknown code', (send, id) => send(rawFrame(JSON.stringify({ v: 1, id, ok: false, code: 'NOPE', error: 'x' })))],
    ['an answer without data', (send, id) => send(rawFrame(JSON.stringify({ v: 1, id, ok: true })))],
  ];

  for (const [what, misbehave] of LOSSES) {
    it(`fails every pending call with the exact message and never reconnects: ${what}`, async () => {
      const proxy = await startProxy({ handler: () => null });
      const c = client({ socket: proxy.address });
      const calls = [c.request('get_token', { provider: 'a' }), c.request('list_providers', {})];
      const conn = await proxy.connection(0);
      await conn.waitForRequests(2);
      misbehave((b) => conn.sendRaw(b), conn.requests[0]!.id as string);
      if (what === 'the server closes') conn.destroy();

      for (const call of calls) {
        const err = await rejectionOf(call);
        expect(err.code).toBe('CONNECTION_LOST');
        expect(err.message).toBe(CONNECTION_LOST_MESSAGE);
      }
      expect(CONNECTION_LOST_MESSAGE).toBe('Credential proxy connection lost. Restart the session.');
      await conn.closed;
      const later = await rejectionOf(c.request('list_providers', {}));
      expect([later.code, later.message]).toEqual(['CONNECTION_LOST', CONNECTION_LOST_MESSAGE]);
      await sleep(30);
      expect(proxy.connections).toHaveLength(1);
    });
  }

  it('treats a server that goes away while idle as lost', async () => {
    const proxy = await startProxy({ handler: () => ({ data: { providers: [] } }) });
    const c = client({ socket: proxy.address });
    await c.request('list_providers', {});
    const conn = proxy.connections[0]!;
    await proxy.close();
    await conn.closed;
    await sleep(20);
    const err = await rejectionOf(c.request('list_providers', {}));
    expect(err.message).toBe(CONNECTION_LOST_MESSAGE);
    const later = await rejectionOf(c.request('list_providers', {}));
    expect(later.message).toBe(CONNECTION_LOST_MESSAGE);
    expect(proxy.connections).toHaveLength(1);
  });

  it('reconnects after the server closed an idle connection (its idle timeout or a connection cap) and is still there', async () => {
    const proxy = await startProxy({ handler: () => ({ data: { providers: [] } }) });
    const c = client({ socket: proxy.address });
    await c.request('list_providers', {});
    const conn = proxy.connections[0]!;
    conn.destroy();
    await conn.closed;
    await sleep(20);
    expect(await c.request('list_providers', {})).toEqual({ providers: [] });
    expect(proxy.connections).toHaveLength(2);
  });

  it('close() ends the connection and fails pending and later calls', async () => {
    const proxy = await startProxy({ handler: () => null });
    const c = client({ socket: proxy.address });
    const pending = c.request('list_providers', {});
    const conn = await proxy.connection(0);
    await conn.waitForRequests(1);
    const pendingError = rejectionOf(pending);
    await c.close();
    expect((await pendingError).code).toBe('CONNECTION_LOST');
    await conn.closed;
    expect(conn.closedByServer).toBe(false);
    expect((await rejectionOf(c.request('list_providers', {}))).message).toContain('closed');
  });
});

describe('tcp transport and environment', () => {
  it('talks to tcp://127.0.0.1:PORT from the environment', async () => {
    const proxy = await startProxy({ transport: 'tcp', capabilityToken: 'abc123', handler: () => ({ data: { key: 'sk-1' } }) });
    expect(proxy.address).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    const c = ProxySocketClient.fromEnv({ CREDPROXY_SOCKET: proxy.address, CREDPROXY_TOKEN: 'abc123' });
    clients.push(c);
    await expect(c.request('get_api_key', { name: 'openai' })).resolves.toEqual({ key: 'sk-1' });
    expect(proxy.connections[0]!.frames[0]).toMatchObject({ payload: { capabilityToken: 'abc123' } });
  });

  it('names the tcp address when nothing listens there', async () => {
    const proxy = await startProxy({ transport: 'tcp' });
    const address = proxy.address;
    await proxy.close();
    proxies.splice(proxies.indexOf(proxy), 1);
    const err = await rejectionOf(client({ socket: address }).request('list_providers', {}));
    expect(err.code).toBe('CONNECTION_LOST');
    expect(err.message).toContain(address);
    expect(err.message).toContain('nothing is listening');
  });

  it('explains a missing CREDPROXY_SOCKET and a malformed address', () => {
    for (const env of [{}, { CREDPROXY_SOCKET: '' }]) {
      expect(() => ProxySocketClient.fromEnv(env)).toThrow(/CREDPROXY_SOCKET is not set/);
    }
    for (const bad of ['tcp://', 'tcp://host', 'tcp://host:0', 'tcp://host:99999', 'tcp://host:80/path']) {
      let caught: unknown;
      try {
        ProxySocketClient.fromEnv({ CREDPROXY_SOCKET: bad });
      } catch (err) {
        caught = err;
      }
      expect(caught, bad).toBeInstanceOf(CredproxyError);
      expect((caught as CredproxyError).code).toBe('CONFIG_INVALID');
    }
    expect(() => new ProxySocketClient({ socket: '/x.sock', requestTimeoutMs: 0 })).toThrow(/requestTimeoutMs/);
  });
});
