import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

  it('rate-limits failed handshakes per address', async () => {
    for (let i = 0; i < 5; i++) {
      const bad = new ProxySocketClient({ socket: serve.socket, capabilityToken: 'ab'.repeat(32) });
      await expect(bad.request('list_api_keys', {})).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      await bad.close();
    }
    // Now even the right token is turned away from this address for the rest of the window.
    const good = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    const err = (await good.request('list_api_keys', {}).catch((e: unknown) => e)) as { code: string };
    expect(err.code).toBe('CONNECTION_LOST');
    await good.close();
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
