import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { FakeUpstream, TcpRecorder } from '../support/fake-upstream.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';
import { NATIVE_CLIENT_ID, OidcTestServer } from '../support/oidc-server.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';

const CLIENT = fileURLToPath(new URL('./fixtures/gateway-client.mjs', import.meta.url));
const OPENAI_KEY = `sk-gateway-canary-${process.pid}-5e1d`;

let ca: TestCa;
let fake: FakeUpstream;
let oidc: OidcTestServer;
let host: HostEnv;
/** Every real secret: none may reach the sandbox side, a log or an audit line. */
const secrets = new Set<string>([OPENAI_KEY]);
/** Everything the sandbox side received or printed. */
const sandboxSide: string[] = [];
const hostLogs: string[] = [];

async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function gatewayUrlOf(serve: ServeProcess): Promise<string> {
  return waitFor('CREDPROXY_GATEWAY_URL', () => /^CREDPROXY_GATEWAY_URL=(.*)$/m.exec(serve.stdout())?.[1]);
}

beforeAll(async () => {
  ca = createTestCa();
  fake = await FakeUpstream.start(ca);
  oidc = await OidcTestServer.start({ accessTokenTtlSeconds: 3600 });
  // The test CA is trusted by the host process only, the way a user would point serve at a corporate CA.
  host = makeHostEnv({ NODE_EXTRA_CA_CERTS: ca.caPath });
  mkdirSync(join(host.home, 'config'), { recursive: true, mode: 0o700 });
  writeFileSync(
    join(host.home, 'config', 'config.json'),
    JSON.stringify({
      providers: { anthropic: { token_endpoint: oidc.endpoints.token, client_id: NATIVE_CLIENT_ID, token_request_format: 'form', api_base: fake.url } },
      keys: { openai: { route: { api_base: `${fake.url}/v1` } } },
    }),
  );
  const set = await oidc.issueTokens();
  for (const s of [set.access_token, set.refresh_token, set.id_token]) if (typeof s === 'string') secrets.add(s);
  const imported = await runCli(['token', 'import', 'anthropic'], { env: host.env, input: JSON.stringify({ ...set, expiry: Math.floor(Date.now() / 1000) + 3600 }) });
  expect(imported.code, imported.stderr).toBe(0);
  const key = await runCli(['key', 'set', 'openai'], { env: host.env, input: `${OPENAI_KEY}\n` });
  expect(key.code, key.stderr).toBe(0);
});

afterAll(async () => {
  await fake?.close();
  await oidc?.close();
  ca?.remove();
  // Tokens the upstream saw (refreshed ones included) are real credentials too.
  for (const r of fake?.requests ?? []) if (r.credential !== null) secrets.add(r.credential);
  const state = join(host.home, 'state');
  const audits = ['audit.jsonl', 'gateway-audit.jsonl'].map((f) => (existsSync(join(state, f)) ? readFileSync(join(state, f), 'utf8') : ''));
  expect(audits[1]).toContain('"kind":"gateway"');
  const sandboxText = sandboxSide.join('\n');
  const hostText = [...hostLogs, ...audits].join('\n');
  expect(sandboxText.length).toBeGreaterThan(1000);
  for (const secret of secrets) {
    expect(sandboxText).not.toContain(secret);
    expect(hostText).not.toContain(secret);
  }
  host?.cleanup();
});

describe('serve --gateway', () => {
  it('injects the real token, refuses it on the socket, refreshes on a 401 and replays', async () => {
    const serve = await startServe(['--gateway', '--allow', 'anthropic', '--allow-key', 'openai'], host.env);
    const recorder = await TcpRecorder.start(Number(new URL(await gatewayUrlOf(serve)).port));
    try {
      const client = new Anthropic({ baseURL: `${recorder.url}/anthropic`, authToken: serve.token, apiKey: null, maxRetries: 0 });
      const before = fake.requests.length;
      const msg = await client.messages.create({ model: 'claude-fake', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
      expect(msg.content[0]).toMatchObject({ type: 'text', text: expect.stringMatching(/^fake answer/) });
      const first = fake.requests.slice(before);
      expect(first).toHaveLength(1);
      expect(secrets.has(first[0]!.credential!)).toBe(true);
      expect(first[0]!.credential).not.toBe(serve.token);
      expect(JSON.stringify(first[0]!.headers)).not.toContain(serve.token);

      // Zero credentials on the socket too.
      const socket = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
      try {
        for (const [op, payload] of [
          ['get_token', { provider: 'anthropic' }],
          ['refresh_token', { provider: 'anthropic' }],
          ['get_api_key', { name: 'openai' }],
        ] as const) {
          const err = (await socket.request(op, payload).then(
            () => null,
            (e: unknown) => e,
          )) as { code?: string; message?: string } | null;
          expect(err?.code).toBe('UNAUTHORIZED');
          expect(err?.message).toContain('gateway');
        }
      } finally {
        await socket.close();
      }

      // The upstream stops accepting the current token: one refresh on the host, one replay.
      const current = first[0]!.credential!;
      fake.accept = (c) => c !== null && c !== current;
      const refreshes = oidc.refreshSuccesses;
      const again = await client.messages.create({ model: 'claude-fake', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] });
      expect(again.content[0]).toMatchObject({ type: 'text' });
      expect(oidc.refreshSuccesses).toBe(refreshes + 1);
      const replayed = fake.requests.slice(before + 1);
      expect(replayed.map((r) => r.credential === current)).toEqual([true, false]);

      // A missing placeholder is refused before anything goes upstream.
      const count = fake.requests.length;
      const refused = await new Anthropic({ baseURL: `${recorder.url}/anthropic`, apiKey: 'sk-ant-guess', maxRetries: 0 })
        .messages.create({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(Anthropic.AuthenticationError);
      expect(fake.requests.length).toBe(count);
    } finally {
      fake.accept = (c) => c !== null;
      sandboxSide.push(recorder.received());
      await recorder.close();
      await serve.stop();
      hostLogs.push(serve.stderr(), serve.stdout().replace(serve.token, ''));
    }
    const lines = readFileSync(join(host.home, 'state', 'gateway-audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    // A line per request the upstream saw; the refused guess is counted in its second's line (written at stop).
    expect(lines.map((l) => [l.kind, l.route, l.status, l.refreshed])).toEqual([
      ['gateway', 'anthropic', 200, false],
      ['gateway', 'anthropic', 200, true],
      ['gateway_refused', undefined, undefined, undefined],
    ]);
    expect(lines[2]).toMatchObject({ refused: { no_placeholder: 1 }, routes: { anthropic: 1 } });
    expect(JSON.stringify(lines)).not.toContain(serve.token);
  });

  it("on the host's loopback only the user's own processes get an answer: another uid holding the placeholder is cut off, and counted", async () => {
    expect(process.getuid?.()).toBe(0); // taking another uid for the client needs root
    const serve = await startServe(['--gateway', '--allow', 'anthropic'], host.env);
    try {
      const url = await gatewayUrlOf(serve);
      const ask = (uid: number | undefined): Promise<string> =>
        new Promise((resolve) => {
          const script = `require('http').get(process.argv[1] + '/anthropic/v1/models', { headers: { authorization: 'Bearer ' + process.argv[2] } }, (r) => { console.log('status ' + r.statusCode); r.resume(); }).on('error', (e) => console.log('error ' + e.code))`;
          // The placeholder on argv only in this test: the point is that even a process holding it is refused.
          const child = spawn(process.execPath, ['-e', script, url, serve.token], { cwd: '/', stdio: ['ignore', 'pipe', 'ignore'], ...(uid === undefined ? {} : { uid, gid: uid }) });
          let out = '';
          child.stdout.on('data', (d: Buffer) => (out += d.toString()));
          child.on('close', () => resolve(out.trim()));
        });
      const before = fake.requests.length;
      expect(await ask(65534)).toBe('error ECONNRESET');
      expect(fake.requests.length).toBe(before);
      expect(await ask(undefined)).toBe('status 200');
      expect(fake.requests.length).toBe(before + 1);
    } finally {
      await serve.stop();
      hostLogs.push(serve.stderr());
    }
    const lines = readFileSync(join(host.home, 'state', 'gateway-audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((l) => l.kind === 'gateway_refused').map((l) => l.refused)).toContainEqual({ foreign_peer: 1 });
  });

  it('--gateway-expose-tokens keeps get_token open on the socket', async () => {
    const serve = await startServe(['--gateway', '--gateway-expose-tokens', '--allow', 'anthropic'], host.env);
    const socket = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    try {
      const token = (await socket.request('get_token', { provider: 'anthropic' })) as { access_token: string };
      expect(typeof token.access_token).toBe('string');
    } finally {
      await socket.close();
      await serve.stop();
      hostLogs.push(serve.stderr());
    }
  });
});

describe('run --gateway --sandbox none', () => {
  it('the official SDKs in the child reach the fake API with only the placeholder in their environment', async () => {
    const r = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--gateway', '--allow', 'anthropic', '--allow-key', 'openai', '--', process.execPath, CLIENT, '--openai'], {
      env: host.env,
      timeoutMs: 60_000,
    });
    hostLogs.push(r.stderr);
    sandboxSide.push(r.stdout);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { call?: string; text?: string; deltas?: string[]; error?: string; env?: Record<string, string> });
    expect(lines.find((l) => l.call === 'anthropic')).toMatchObject({ text: expect.stringMatching(/^fake answer/) });
    expect(lines.find((l) => l.call === 'anthropic-stream')!.deltas!.length).toBeGreaterThan(1);
    expect(lines.find((l) => l.call === 'openai')).toMatchObject({ text: expect.stringMatching(/^fake answer/) });
    const env = lines.at(-1)!.env!;
    expect(env.CREDPROXY_GATEWAY_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(env.NODE_EXTRA_CA_CERTS).toBeUndefined();
    expect(fake.requests.at(-1)!.credential).toBe(OPENAI_KEY);
  });
});

describe('run --gateway with a container engine', () => {
  // The working case (the relay on the image's node behind --network none) is in test/e2e/podman.test.ts.
  it('is refused as a usage error over --transport tcp and for llxprt-code images, before anything starts', async () => {
    const tcp = await runCli(['run', '--sandbox', 'podman', '--image', 'credproxy-no-such-image', '--transport', 'tcp', '--gateway', '--allow', 'anthropic', '--', 'true'], { env: host.env });
    expect(tcp.code).toBe(2);
    expect(tcp.stderr).toContain('drop --transport tcp');
    const llxprt = await runCli(['run', '--sandbox', 'podman', '--image', 'credproxy-no-such-image', '--llxprt', '--gateway', '--allow', 'anthropic', '--', 'true'], { env: host.env });
    expect(llxprt.code).toBe(2);
    expect(llxprt.stderr).toContain('do not take llxprt-code images yet');
  });
});

describe('run --gateway --sandbox bwrap', () => {
  it('the SDKs inside real bwrap (no network) reach the fake API through the in-sandbox relay', async () => {
    const before = fake.requests.length;
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--gateway', '--allow', 'anthropic', '--allow-key', 'openai', '--', process.execPath, CLIENT, '--openai'], {
      env: host.env,
      timeoutMs: 60_000,
    });
    hostLogs.push(r.stderr);
    sandboxSide.push(r.stdout);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { call?: string; text?: string; deltas?: string[]; env?: Record<string, string> });
    expect(lines.find((l) => l.call === 'anthropic')).toMatchObject({ text: expect.stringMatching(/^fake answer/) });
    expect(lines.find((l) => l.call === 'anthropic-stream')!.deltas!.length).toBeGreaterThan(1);
    expect(lines.find((l) => l.call === 'openai')).toMatchObject({ text: expect.stringMatching(/^fake answer/) });
    const env = lines.at(-1)!.env!;
    expect(env.CREDPROXY_GATEWAY_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(env.CREDPROXY_SOCKET).toMatch(/^\/run\/credproxy\//);
    const seen = fake.requests.slice(before);
    expect(seen).toHaveLength(3);
    expect(seen[2]!.credential).toBe(OPENAI_KEY);
    for (const q of seen) {
      expect(q.credential).not.toBeNull();
      expect(r.stdout).not.toContain(q.credential!);
      expect(q.credential).not.toBe(env.CREDPROXY_TOKEN);
    }
  });

  it('the relay passes the command\'s exit status through and forwards a SIGTERM it receives', async () => {
    const exit = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--gateway', '--allow', 'anthropic', '--', 'sh', '-c', 'exit 7'], { env: host.env });
    expect(exit.code, exit.stderr).toBe(7);
    const trapped = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--gateway', '--allow', 'anthropic', '--', 'sh', '-c', 'trap "echo got-term; exit 3" TERM; kill -TERM $PPID; sleep 5 & wait'], { env: host.env });
    expect(trapped.stdout).toContain('got-term');
    expect(trapped.code).toBe(3);
  });
});
