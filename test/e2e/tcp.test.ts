import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameDecoder, parsePayload } from '../../src/protocol/frame.js';
import { frameOf } from '../support/raw-client.js';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { ProxyServer } from '../../src/server/server.js';
import { Policy } from '../../src/server/policy.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { SimpleCredentials } from '../support/simple-credentials.js';

const KEY = `sk-tcp-${process.pid}`;

describe('serve --transport tcp (loopback)', () => {
  let host: HostEnv;
  let serve: ServeProcess;
  beforeAll(async () => {
    host = makeHostEnv();
    expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: KEY })).code).toBe(0);
    serve = await startServe(['--transport', 'tcp', '--allow-key', 'openai'], host.env);
  });
  afterAll(async () => {
    await serve?.stop();
    host?.cleanup();
  });

  it('listens on 127.0.0.1 and serves a client given tcp://HOST:PORT', async () => {
    expect(serve.socket).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    const c = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    expect((await c.request('get_api_key', { name: 'openai' })).key).toBe(KEY);
    await c.close();
    const cli = await runCli(['key', 'get', 'openai'], { env: { PATH: process.env.PATH, CREDPROXY_SOCKET: serve.socket, CREDPROXY_TOKEN: serve.token } });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout.trim()).toBe(KEY);
  });

  /** One handshake over a fresh TCP connection from `localAddress`; the answer and how long it took. */
  async function handshakeFrom(localAddress: string, token: string): Promise<{ frame: Record<string, unknown> | null; ms: number }> {
    const { host: h, port } = /^tcp:\/\/(?<host>[^:]+):(?<port>\d+)$/.exec(serve.socket)!.groups!;
    const started = Date.now();
    const socket = connect({ host: h!, port: Number(port), localAddress });
    const decoder = new FrameDecoder();
    return new Promise((resolve, reject) => {
      socket.once('error', reject);
      socket.once('connect', () => socket.write(frameOf({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: token } })));
      socket.on('data', (chunk: Buffer) => {
        const [payload] = decoder.push(chunk);
        if (payload === undefined) return;
        socket.destroy();
        resolve({ frame: parsePayload(payload), ms: Date.now() - started });
      });
      socket.once('close', () => resolve({ frame: null, ms: Date.now() - started }));
    });
  }

  it('a valid token is always admitted at once, whatever failed before from the same address', async () => {
    for (let i = 0; i < 8; i++) {
      const bad = await handshakeFrom('127.0.0.1', 'ab'.repeat(32));
      expect(bad.frame).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    }
    // The old throttle locked the right token out of this address for 60 s here.
    const good = await handshakeFrom('127.0.0.1', serve.token);
    expect(good.frame).toMatchObject({ ok: true, data: { version: 1 } });
    expect(good.ms).toBeLessThan(2000);
    const c = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    expect((await c.request('get_api_key', { name: 'openai' })).key).toBe(KEY);
    await c.close();
  });

  it('failures are slowed (tarpit), and rotating 127.x.y.z source addresses does not reset the count', async () => {
    // Eight failures above already counted against loopback as a whole: a new address inside 127/8 is still slow.
    const timings: number[] = [];
    for (let i = 2; i < 6; i++) {
      const bad = await handshakeFrom(`127.0.${i}.${i + 7}`, 'cd'.repeat(32));
      expect(bad.frame).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
      timings.push(bad.ms);
    }
    // 250 ms doubling from the sixth failure: every one of these waited at least 250 ms.
    for (const ms of timings) expect(ms).toBeGreaterThanOrEqual(240);
    // And the legitimate client from yet another loopback address is still admitted at once.
    const good = await handshakeFrom('127.0.9.9', serve.token);
    expect(good.frame).toMatchObject({ ok: true });
  }, 60_000);

  it('audit lines of TCP connections carry the remote address', async () => {
    await serve.stop();
    const lines = readFileSync(join(host.home, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const served = lines.filter((l) => l.op === 'get_api_key' && l.result === 'OK');
    expect(served.length).toBeGreaterThan(0);
    for (const l of served) expect(l.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(lines.filter((l) => l.op === 'handshake' && l.result === 'OK').some((l) => String(l.remote).startsWith('127.0.9.9:'))).toBe(true);
  });

  it('refuses a malformed transport and TCP without a capability token', async () => {
    const r = await runCli(['serve', '--transport', 'udp:1', '--allow-key', 'openai'], { env: host.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/invalid --transport/);
    expect(
      () =>
        new ProxyServer({
          tokens: new MemoryTokenStore(),
          keys: new MemoryKeyStore(),
          credentials: new SimpleCredentials(new MemoryTokenStore()),
          policy: Policy.from({ allow: [], keys: [], allowAll: false, readOnly: false }),
          tcp: { host: '127.0.0.1', port: 0 },
        }),
    ).toThrow(/requires a capability token/);
  });
});
