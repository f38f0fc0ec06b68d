import { chownSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { ProxyTokenStore } from '../../src/client/proxy-token-store.js';
import { ProxyKeyStore } from '../../src/client/proxy-key-store.js';
import { CONNECTION_LOST_MESSAGE } from '../../src/client/proxy-connection.js';
import { openHostStores } from '../../src/store/open.js';
import { resolveDirs } from '../../src/paths.js';
import { RawClient } from '../support/raw-client.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';

// Unique values that must never leave the host process.
const CANARY_RT = `canary-rt-${process.pid}-7f3a9c1e`;
const FORGED_RT = `forged-rt-${process.pid}-55d0b2aa`;
const KEY_VALUE = `sk-canary-${process.pid}-0a1b2c`;
const farFuture = Math.floor(Date.now() / 1000) + 3600 * 24;

function tokenJson(extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ access_token: `at-acme-${process.pid}`, expiry: farFuture, refresh_token: CANARY_RT, id_token: 'idt-1', ...extra });
}

async function expectCode(p: Promise<unknown>, code: string): Promise<Error & { code: string; retryAfter?: number }> {
  const err = (await p.then(
    () => {
      throw new Error(`expected ${code}, got success`);
    },
    (e: unknown) => e,
  )) as Error & { code: string; retryAfter?: number };
  expect(err.code).toBe(code);
  return err;
}

describe('credproxy serve end to end (file store)', () => {
  let host: HostEnv;
  let serve: ServeProcess;
  const clients: Array<{ close(): unknown }> = [];
  const rawClients: RawClient[] = [];

  async function raw(): Promise<RawClient> {
    const c = await RawClient.connect(serve.socket);
    rawClients.push(c);
    return c;
  }
  function client(opts: { idleTimeoutMs?: number } = {}): ProxySocketClient {
    const c = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token, ...opts });
    clients.push(c);
    return c;
  }

  beforeAll(async () => {
    host = makeHostEnv();
    const env = host.env;
    for (const [provider, bucket] of [['acme', 'default'], ['acme', 'work'], ['acme', 'canary'], ['secret', 'default']] as const) {
      const r = await runCli(['token', 'import', provider, '--bucket', bucket], { env, input: tokenJson() });
      expect(r.stderr).not.toContain(CANARY_RT);
      expect(r.code, r.stderr).toBe(0);
    }
    for (const [name, value] of [['openai', KEY_VALUE], ['hidden', 'sk-hidden']] as const) {
      const r = await runCli(['key', 'set', name], { env, input: `${value}\n` });
      expect(r.code, r.stderr).toBe(0);
    }
    serve = await startServe(['--allow', 'acme:*', '--allow', 'corp:ci', '--allow-key', 'openai', '--allow-write'], env);
  });

  afterAll(async () => {
    for (const c of clients) await c.close();
    for (const c of rawClients) c.close();
    await serve?.stop();
    host?.cleanup();
  });

  it('puts the socket in a fresh private directory', () => {
    expect(statSync(serve.socket).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(serve.socket)).mode & 0o777).toBe(0o700);
    expect(readdirSync(dirname(serve.socket))).toEqual([serve.socket.split('/').pop()]);
    expect(serve.token).toMatch(/^[0-9a-f]{64}$/);
  });

  it('serves every token and key op through the proxy stores', async () => {
    const c = client();
    const tokens = new ProxyTokenStore(c);
    const keys = new ProxyKeyStore(c);

    const t = await tokens.getToken('acme');
    expect(t).toMatchObject({ access_token: `at-acme-${process.pid}`, expiry: farFuture, id_token: 'idt-1' });
    expect(t && 'refresh_token' in t).toBe(false);
    expect(await tokens.getToken('acme', 'nothing-here')).toBeNull();
    expect(await tokens.listProviders()).toEqual(['acme']); // 'secret' is outside the policy
    expect((await tokens.listBuckets('acme')).sort()).toEqual(['canary', 'default', 'work']);
    expect(await tokens.getBucketStats('acme', 'work')).toEqual({ bucket: 'work', requestCount: 0, percentage: 0 });
    expect(await tokens.getBucketStats('acme', 'nothing-here')).toBeNull();
    expect(await tokens.acquireRefreshLock('acme')).toBe(true);
    await tokens.releaseRefreshLock('acme');

    expect(await keys.getKey('openai')).toBe(KEY_VALUE);
    expect(await keys.hasKey('openai')).toBe(true);
    expect(await keys.listKeys()).toEqual(['openai']);
    await expect(keys.saveKey('openai', 'x')).rejects.toThrow('API key management is not available in sandbox mode. Manage keys on the host.');
    await expect(keys.deleteKey('openai')).rejects.toThrow('API key management is not available in sandbox mode. Manage keys on the host.');

    // save_token with a forged refresh_token: new access token stored, host refresh token kept.
    await tokens.saveToken('acme', { access_token: 'at-new', expiry: farFuture + 10, refresh_token: FORGED_RT, extra: 'x', id_token: 'idt-forged' }, 'work');
    expect(await tokens.getToken('acme', 'work')).toMatchObject({ access_token: 'at-new', id_token: 'idt-1' });
    expect((await tokens.getToken('acme', 'work'))?.extra).toBeUndefined();
    const hostStores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
    const stored = await hostStores.tokens.getToken('acme', 'work');
    expect(stored?.refresh_token).toBe(CANARY_RT);

    // remove: gone on the host; removing again is silent.
    await tokens.saveToken('acme', { access_token: 'tmp', expiry: farFuture }, 'tmp');
    await tokens.removeToken('acme', 'tmp');
    expect(await hostStores.tokens.getToken('acme', 'tmp')).toBeNull();
    await tokens.removeToken('acme', 'tmp');

    // No provider is configured for 'acme': an explicit refresh is refused with a clear code.
    const err = await expectCode(c.request('refresh_token', { provider: 'acme' }), 'PROVIDER_NOT_FOUND');
    expect(err.message).toContain('acme');
  });

  it('refuses what the policy does not allow, before touching the store', async () => {
    const tokens = new ProxyTokenStore(client());
    const keys = new ProxyKeyStore(client());
    await expectCode(tokens.getToken('secret'), 'UNAUTHORIZED');
    await expectCode(tokens.getToken('corp'), 'UNAUTHORIZED'); // only corp:ci is allowed
    await expectCode(tokens.listBuckets('secret'), 'UNAUTHORIZED');
    await expectCode(keys.getKey('hidden'), 'UNAUTHORIZED');
    expect(await tokens.getToken('corp', 'ci')).toBeNull(); // allowed, just absent
  });

  it('answers pipelined requests by id', async () => {
    const c = await raw();
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token })).toMatchObject({ ok: true, data: { version: 1 } });
    const ids = ['a', 'b', 'c', 'd', 'e'].map((id) => c.fire(id === 'c' ? 'list_api_keys' : 'get_token', id === 'c' ? {} : { provider: 'acme' }, id));
    const answers = await Promise.all(ids.map((id) => c.answerFor(id)));
    expect(answers.map((a) => a.id)).toEqual(ids);
    expect(answers.every((a) => a.ok === true)).toBe(true);
    expect(answers[2]).toMatchObject({ data: { keys: ['openai'] } });
  });

  it('negotiates versions and checks the capability token first', async () => {
    const a = await raw();
    expect(await a.handshake({ minVersion: 1, maxVersion: 2, capabilityToken: serve.token })).toMatchObject({ ok: true, data: { version: 1 } });
    const b = await raw();
    expect(await b.handshake({ minVersion: 2, maxVersion: 3, capabilityToken: serve.token })).toMatchObject({ ok: false, code: 'UNKNOWN_VERSION' });
    await b.closed;
    const d = await raw();
    // Wrong token AND unsupported version: the token is checked first.
    expect(await d.handshake({ minVersion: 2, maxVersion: 3, capabilityToken: 'ab'.repeat(32) })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await d.closed;
    const e = await raw();
    expect(await e.handshake({ minVersion: 1, maxVersion: 1 })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await e.closed;
    const bad = new ProxySocketClient({ socket: serve.socket, capabilityToken: 'cd'.repeat(32) });
    clients.push(bad);
    await expectCode(bad.request('list_api_keys', {}), 'UNAUTHORIZED');
  });

  it('rate-limits a connection at 60 requests per second with retryAfter', async () => {
    const c = await raw();
    await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token });
    const answers = [];
    // Batches of 10 stay under the in-flight cap; 80 requests inside one second.
    for (let batch = 0; batch < 8; batch++) {
      const ids = Array.from({ length: 10 }, (_, i) => c.fire('list_api_keys', {}, `rl-${batch}-${i}`));
      answers.push(...(await Promise.all(ids.map((id) => c.answerFor(id)))));
    }
    const limited = answers.filter((a) => a.ok === false);
    expect(answers.filter((a) => a.ok === true).length).toBe(60);
    expect(limited.length).toBe(20);
    for (const a of limited) expect(a).toMatchObject({ code: 'RATE_LIMITED', retryAfter: 1 });
    // Another connection is not affected.
    expect(await new ProxyKeyStore(client()).listKeys()).toEqual(['openai']);
  });

  it('closes an idle connection and reconnects with a fresh handshake', async () => {
    const c = client({ idleTimeoutMs: 200 });
    const keys = new ProxyKeyStore(c);
    expect(await keys.listKeys()).toEqual(['openai']);
    await new Promise((r) => setTimeout(r, 500));
    expect(await keys.listKeys()).toEqual(['openai']);
    const audit = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8');
    expect(audit.length).toBeGreaterThan(0);
  });

  it('the CLI inside the "sandbox" routes through the proxy', async () => {
    const env = { PATH: process.env.PATH, CREDPROXY_SOCKET: serve.socket, CREDPROXY_TOKEN: serve.token };
    const get = await runCli(['token', 'get', 'acme'], { env });
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout.trim()).toBe(`at-acme-${process.pid}`);
    const key = await runCli(['key', 'get', 'openai'], { env });
    expect(key.stdout.trim()).toBe(KEY_VALUE);
    const list = await runCli(['key', 'list', '--json'], { env });
    expect(JSON.parse(list.stdout)).toEqual(['openai']);
    const status = await runCli(['status', '--json'], { env });
    expect(status.code, status.stderr).toBe(0);
    const report = JSON.parse(status.stdout) as { mode: string; tokens: Array<{ provider: string; bucket: string }>; keys: string[] };
    expect(report.mode).toBe('sandbox');
    expect(report.tokens.map((t) => `${t.provider}:${t.bucket}`).sort()).toEqual(['acme:canary', 'acme:default', 'acme:work']);
    const set = await runCli(['key', 'set', 'x'], { env, input: 'v\n' });
    expect(set.code).toBe(1);
    expect(set.stderr).toContain('API key management is not available in sandbox mode. Manage keys on the host.');
    const denied = await runCli(['token', 'get', 'secret'], { env });
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('UNAUTHORIZED');
    const bad = await runCli(['token', 'get', 'no/slash'], { env });
    expect(bad.code).toBe(2);
  });

  it('canary: the refresh token crosses no frame through import, get, forged save, list and remove', async () => {
    const c = await raw();
    await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token });
    expect(await c.request('get_token', { provider: 'acme', bucket: 'canary' })).toMatchObject({ ok: true });
    expect(
      await c.request('save_token', { provider: 'acme', bucket: 'canary', token: { access_token: 'at-c2', expiry: farFuture, refresh_token: FORGED_RT } }),
    ).toMatchObject({ ok: true });
    expect(await c.request('get_token', { provider: 'acme', bucket: 'canary' })).toMatchObject({ ok: true, data: { access_token: 'at-c2' } });
    expect(await c.request('list_providers', {})).toMatchObject({ ok: true });
    expect(await c.request('list_buckets', { provider: 'acme' })).toMatchObject({ ok: true });
    const hostStores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
    expect((await hostStores.tokens.getToken('acme', 'canary'))?.refresh_token).toBe(CANARY_RT); // survived the forged save
    // The sandbox's remove takes the access token it could see; the host's refresh token stays.
    expect(await c.request('remove_token', { provider: 'acme', bucket: 'canary' })).toMatchObject({ ok: true, data: { removed: 'access_token' } });
    expect(await hostStores.tokens.getToken('acme', 'canary')).toMatchObject({ expiry: 0, refresh_token: CANARY_RT });
    expect(c.frames.length).toBeGreaterThanOrEqual(7);
    expect(c.receivedText).not.toContain(CANARY_RT);
    expect(c.receivedText).not.toContain(FORGED_RT);
    expect(c.receivedText).not.toContain('refresh_token');
  });

  it('never lets a refresh token, key value or capability token into logs or audit', () => {
    const audit = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8');
    const logs = serve.stderr();
    for (const text of [audit, logs]) {
      expect(text).not.toContain(CANARY_RT);
      expect(text).not.toContain(FORGED_RT);
      expect(text).not.toContain(KEY_VALUE);
      expect(text).not.toContain(serve.token);
    }
    for (const c of rawClients) {
      expect(c.receivedText).not.toContain(CANARY_RT);
      expect(c.receivedText).not.toContain(FORGED_RT);
    }
    // Audit lines are JSON with the fields of SPEC §5.
    const first = JSON.parse(audit.trim().split('\n').find((l) => l.includes('"get_token"'))!);
    expect(first).toMatchObject({ op: 'get_token', provider: 'acme' });
    expect(typeof first.peerPid).toBe('number');
  });

  it('surfaces a lost connection with the exact message and removes the socket on SIGTERM', async () => {
    const c = client();
    const keys = new ProxyKeyStore(c);
    expect(await keys.listKeys()).toEqual(['openai']);
    const socketPath = serve.socket;
    const result = await serve.stop('SIGTERM');
    expect(result.code === 143 || result.signal === 'SIGTERM' || result.code === 0).toBe(true);
    expect(existsSync(socketPath)).toBe(false);
    expect(existsSync(dirname(socketPath))).toBe(false);
    await expect(keys.listKeys()).rejects.toThrow(CONNECTION_LOST_MESSAGE);
    await expect(keys.listKeys()).rejects.toThrow(CONNECTION_LOST_MESSAGE);
  });
});

describe('peer check against the real serve process', () => {
  it('refuses a peer with another uid (root) unless --allow-root', async () => {
    if (process.getuid?.() !== 0) throw new Error('this test needs root to run serve as another uid');
    const host = makeHostEnv();
    try {
      chownSync(host.home, 65534, 65534);
      const env = { ...host.env, HOME: host.home };
      const asNobody = (args: string[]): Promise<ServeProcess> => startServe(args, env, { uid: 65534 });
      for (const [args, allowed] of [[[], false], [['--allow-root'], true]] as const) {
        const s = await asNobody(['--allow-key', 'k', ...args]);
        try {
          const c = await RawClient.connect(s.socket); // root may connect to the file...
          c.send({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: s.token } });
          if (allowed) {
            expect(await c.frameAt(0)).toMatchObject({ ok: true });
          } else {
            await c.closed; // ...but the server refuses the uid before anything else
            expect(c.frames).toEqual([]);
          }
          c.close();
        } finally {
          await s.stop();
        }
      }
    } finally {
      host.cleanup();
    }
  });
});

describe('serve --rate-limit (for benchmarks)', () => {
  it('raises the per-connection limit, and refuses a malformed value with exit 2', async () => {
    const host = makeHostEnv();
    try {
      const bad = await runCli(['serve', '--allow-key', 'k', '--rate-limit', '1e3'], { env: host.env });
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('--rate-limit');
      const s = await startServe(['--allow-key', 'k', '--rate-limit', '200'], host.env);
      try {
        const c = await RawClient.connect(s.socket);
        await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: s.token });
        const answers = [];
        for (let batch = 0; batch < 25; batch++) {
          const ids = Array.from({ length: 10 }, (_, i) => c.fire('list_api_keys', {}, `rl-${batch}-${i}`));
          answers.push(...(await Promise.all(ids.map((id) => c.answerFor(id)))));
        }
        // 250 requests well inside a second or two: the first 200 of any second pass.
        expect(answers.filter((a) => a.ok === true).length).toBeGreaterThanOrEqual(200);
        expect(answers.filter((a) => a.ok === false).every((a) => a.code === 'RATE_LIMITED')).toBe(true);
        c.close();
      } finally {
        await s.stop();
      }
    } finally {
      host.cleanup();
    }
  });
});
