import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig, type CredproxyConfig } from '../../src/config.js';
import type { GatewayAuditEntry, GatewayRefusedEntry } from '../../src/gateway/audit.js';
import { buildRoutes } from '../../src/gateway/routes.js';
import { GatewayServer } from '../../src/gateway/server.js';
import { ProviderRegistry } from '../../src/oauth/index.js';
import { FileCooldownStore } from '../../src/refresh/cooldown.js';
import { RefreshCoordinator } from '../../src/refresh/coordinator.js';
import { Policy } from '../../src/server/policy.js';
import type { OAuthToken } from '../../src/store/types.js';
import { FakeUpstream, TcpRecorder } from '../support/fake-upstream.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { NATIVE_CLIENT_ID, OidcTestServer } from '../support/oidc-server.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';
import { capturingLogger } from '../refresh/fakes.js';

const PLACEHOLDER = 'a'.repeat(16) + '0123456789abcdef'.repeat(3);
const OPENAI_KEY = 'sk-real-openai-key-canary-7f3a9c2e51';

/** Every real secret this file handled: none may reach a client, the audit or a log. */
const secrets = new Set<string>([OPENAI_KEY]);
const logs: Array<() => string> = [];

let ca: TestCa;
let fake: FakeUpstream;
let oidc: OidcTestServer;
let config: CredproxyConfig;

interface Rig {
  store: MemoryTokenStore;
  keys: MemoryKeyStore;
  coordinator: RefreshCoordinator;
  gateway: GatewayServer;
  recorder: TcpRecorder;
  routes: ReturnType<typeof buildRoutes>['routes'];
  logger: ReturnType<typeof capturingLogger>['logger'];
  /** A line per request the upstream saw. */
  audit: GatewayAuditEntry[];
  /** The per-second counts of what the gateway refused itself. */
  refused: GatewayRefusedEntry[];
  url: string;
  stateDir: string;
}
let rig: Rig;
const recorders: TcpRecorder[] = [];
const audits: Array<Array<GatewayAuditEntry | GatewayRefusedEntry>> = [];

beforeAll(async () => {
  ca = createTestCa();
  fake = await FakeUpstream.start(ca);
  oidc = await OidcTestServer.start({ accessTokenTtlSeconds: 3600 });
  // A partial entry over the anthropic preset: the rest (flow, scopes, quirks) comes from the preset.
  config = parseConfig(
    JSON.stringify({
      providers: {
        anthropic: { token_endpoint: oidc.endpoints.token, client_id: NATIVE_CLIENT_ID, token_request_format: 'form', api_base: fake.url },
        limited: { flow: 'device_code', device_authorization_endpoint: oidc.endpoints.deviceAuthorization, token_endpoint: oidc.endpoints.token, client_id: NATIVE_CLIENT_ID, api_base: `${fake.url}/base`, gateway: { methods: ['GET'], path_prefixes: ['/echo'] } },
      },
      keys: { openai: { route: { api_base: `${fake.url}/v1` } } },
    }),
    'config.json',
  );
});

afterAll(async () => {
  await fake?.close();
  await oidc?.close();
  ca?.remove();
  const returned = recorders.map((r) => r.received()).join('\n');
  const auditText = audits.flat().map((e) => JSON.stringify(e)).join('\n');
  const logText = logs.map((l) => l()).join('\n');
  expect(returned.length).toBeGreaterThan(10_000);
  for (const secret of secrets) {
    expect(returned).not.toContain(secret);
    expect(auditText).not.toContain(secret);
    expect(logText).not.toContain(secret);
  }
  expect(auditText).not.toContain(PLACEHOLDER);
  expect(logText).not.toContain(PLACEHOLDER);
});

async function login(store: MemoryTokenStore, provider = 'anthropic'): Promise<OAuthToken> {
  const set = await oidc.issueTokens();
  const { expires_in, ...rest } = set;
  const token: OAuthToken = { ...rest, expiry: Math.floor(Date.now() / 1000) + (expires_in ?? 3600) };
  for (const s of [token.access_token, token.refresh_token, token.id_token]) if (typeof s === 'string') secrets.add(s);
  await store.saveToken(provider, token);
  return token;
}

/** The per-second refusal lines, summed, come to these counts (the second's line is written when its timer fires). */
async function expectRefused(refused: Record<string, number>, routes: Record<string, number>): Promise<void> {
  const sum = (pick: (e: GatewayRefusedEntry) => Record<string, number>): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const e of rig.refused) for (const [k, n] of Object.entries(pick(e))) out[k] = (out[k] ?? 0) + n;
    return out;
  };
  await vi.waitFor(() => expect(sum((e) => e.refused)).toEqual(refused), { timeout: 10_000, interval: 100 });
  expect(sum((e) => e.routes)).toEqual(routes);
}

beforeEach(async () => {
  const stateDir = await mkdtemp(join(tmpdir(), 'credproxy-gw-'));
  const store = new MemoryTokenStore();
  const keys = new MemoryKeyStore();
  await keys.saveKey('openai', OPENAI_KEY);
  const { logger, output } = capturingLogger();
  logs.push(output);
  const coordinator = new RefreshCoordinator({ store, providers: new ProviderRegistry({ config }), cooldown: FileCooldownStore.inStateDir(stateDir), logger });
  const policy = Policy.from({ allow: ['anthropic', 'limited'], keys: ['openai'], allowAll: false, readOnly: false });
  const table = buildRoutes({ policy, config });
  const audit: GatewayAuditEntry[] = [];
  const refused: GatewayRefusedEntry[] = [];
  audits.push(audit, refused);
  const record = (e: GatewayAuditEntry | GatewayRefusedEntry): void => void (e.kind === 'gateway' ? audit.push(e) : refused.push(e));
  const gateway = new GatewayServer({ routes: table.routes, placeholder: PLACEHOLDER, credentials: coordinator, keys, logger, audit: { record }, upstream: { ca: ca.caPem } });
  const direct = await gateway.listen({ host: '127.0.0.1', port: 0 });
  const recorder = await TcpRecorder.start(Number(new URL(direct).port));
  recorders.push(recorder);
  fake.accept = (c) => c !== null;
  rig = { store, keys, coordinator, gateway, recorder, routes: table.routes, logger, audit, refused, url: recorder.url, stateDir };
});

afterEach(async () => {
  for (const t of rig.store.tokens.values()) for (const s of [t.access_token, t.refresh_token]) if (typeof s === 'string') secrets.add(s);
  await rig.gateway.stop();
  await rig.recorder.close();
  await rig.coordinator.close();
  await rm(rig.stateDir, { recursive: true, force: true });
});

function anthropic(apiKeyMode = false): Anthropic {
  const base = { baseURL: `${rig.url}/anthropic`, maxRetries: 0 };
  return apiKeyMode ? new Anthropic({ ...base, apiKey: PLACEHOLDER }) : new Anthropic({ ...base, authToken: PLACEHOLDER, apiKey: null });
}

/** A raw request through the gateway; the whole answer as text. */
function raw(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer | Readable): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    // host/port/path rather than a URL string: a URL would have its dot segments resolved before sending.
    const { hostname, port } = new URL(rig.url);
    const req = http.request({ hostname, port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body instanceof Readable) body.pipe(req);
    else req.end(body);
  });
}

const bearer = { authorization: `Bearer ${PLACEHOLDER}` };

describe('gateway with the official SDKs', () => {
  it('sends the real OAuth token upstream with the oauth beta merged in, never the placeholder', async () => {
    const token = await login(rig.store);
    const before = fake.requests.length;
    const msg = await anthropic().messages.create(
      { model: 'claude-fake', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'anthropic-beta': 'tools-2024-04-04' } },
    );
    expect(msg.content[0]).toMatchObject({ type: 'text', text: expect.stringMatching(/^fake answer/) });
    const seen = fake.requests.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.credential).toBe(token.access_token);
    expect(seen[0]!.url).toBe('/v1/messages');
    expect(String(seen[0]!.headers['anthropic-beta']).split(',')).toEqual(['tools-2024-04-04', 'oauth-2025-04-20']);
    expect(seen[0]!.headers['accept-encoding']).toBe('identity');
    expect(JSON.stringify(seen[0]!.headers)).not.toContain(PLACEHOLDER);
    expect(seen[0]!.bodyText).not.toContain(PLACEHOLDER);
    expect(rig.audit.at(-1)).toMatchObject({ route: 'anthropic', method: 'POST', path: '/v1/messages', status: 200, refreshed: false });
    expect(rig.audit.at(-1)!.bytesIn).toBeGreaterThan(0);
    expect(rig.audit.at(-1)!.bytesOut).toBeGreaterThan(0);
  });

  it('streams Anthropic SSE event by event', async () => {
    await login(rig.store);
    const stream = anthropic().messages.stream({ model: 'claude-fake', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    const deltas: string[] = [];
    stream.on('text', (t) => deltas.push(t));
    const final = await stream.finalMessage();
    expect(deltas.length).toBeGreaterThan(1);
    expect(deltas.join('')).toMatch(/^fake answer #\d+$/);
    expect(final.stop_reason).toBe('end_turn');
  });

  it('serves a key route to the OpenAI SDK (Authorization: Bearer) in plain and streaming calls', async () => {
    const client = new OpenAI({ baseURL: `${rig.url}/keys/openai`, apiKey: PLACEHOLDER, maxRetries: 0 });
    const before = fake.requests.length;
    const done = await client.chat.completions.create({ model: 'gpt-fake', messages: [{ role: 'user', content: 'hi' }] });
    expect(done.choices[0]!.message.content).toMatch(/^fake answer/);
    const parts: string[] = [];
    for await (const chunk of await client.chat.completions.create({ model: 'gpt-fake', stream: true, messages: [{ role: 'user', content: 'hi' }] })) {
      parts.push(chunk.choices[0]?.delta.content ?? '');
    }
    expect(parts.join('')).toMatch(/^fake answer/);
    const seen = fake.requests.slice(before);
    expect(seen.map((r) => [r.url, r.credential])).toEqual([
      ['/v1/chat/completions', OPENAI_KEY],
      ['/v1/chat/completions', OPENAI_KEY],
    ]);
  });

  it('a streamed answer whose events and end arrive at once reaches the client whole, each time', async () => {
    await login(rig.store);
    for (let i = 0; i < 20; i++) {
      const r = await raw('GET', '/anthropic/sse-burst', bearer);
      expect(r.status).toBe(200);
      expect(r.text.match(/^data: /gm)?.length, r.text).toBe(21);
      expect(r.text.endsWith('data: [DONE]\n\n')).toBe(true);
    }
  });

  it('refuses a missing or wrong placeholder with 401, counted in the audit, and sends nothing upstream', async () => {
    await login(rig.store);
    const before = fake.requests.length;
    const none = await anthropic()
      .messages.create({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] }, { headers: { authorization: null } })
      .catch((e: unknown) => e);
    expect(none).toBeInstanceOf(Anthropic.AuthenticationError);
    const wrong = await new Anthropic({ baseURL: `${rig.url}/anthropic`, apiKey: PLACEHOLDER.replace(/.$/, 'x'), maxRetries: 0 })
      .messages.create({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(Anthropic.AuthenticationError);
    // A real-looking token in its place is no better.
    const forged = await raw('GET', '/anthropic/echo', { authorization: `Bearer ${[...rig.store.tokens.values()][0]!.access_token}` });
    expect(forged.status).toBe(401);
    expect(fake.requests.length).toBe(before);
    // Nothing was served: no line of its own; the refusals are counted in the second's line.
    expect(rig.audit).toEqual([]);
    await expectRefused({ no_placeholder: 3 }, { anthropic: 3 });
  });

  it('a flood of refused requests (no placeholder, unknown routes, malformed HTTP) grows the audit by a line a second, with every refusal counted', async () => {
    await login(rig.store);
    const before = fake.requests.length;
    const started = Date.now();
    const url = new URL(rig.url);
    const garbage = async (): Promise<void> => {
      const s = connect(Number(url.port), url.hostname);
      await new Promise<void>((resolve) => {
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.end('NOT HTTP AT ALL\r\n\r\n');
      });
    };
    for (let round = 0; round < 40; round++) {
      await Promise.all([
        ...Array.from({ length: 20 }, () => raw('GET', '/anthropic/v1/models', {})),
        ...Array.from({ length: 20 }, () => raw('GET', '/nope/v1/models', bearer)),
        ...Array.from({ length: 5 }, () => garbage()),
      ]);
    }
    const seconds = Math.ceil((Date.now() - started) / 1000) + 1;
    expect(fake.requests.length).toBe(before);
    expect(rig.audit).toEqual([]);
    await expectRefused({ no_placeholder: 800, no_route: 800, bad_request: 200 }, { anthropic: 800, '-': 1000 });
    expect(rig.refused.length).toBeLessThanOrEqual(seconds);
  });

  it('answers 404 for routes the policy did not allow and 400 for paths that climb out of the base', async () => {
    await login(rig.store);
    const before = fake.requests.length;
    expect((await raw('GET', '/gemini/v1/models', bearer)).status).toBe(404);
    expect((await raw('GET', '/keys/anthropic/v1/models', bearer)).status).toBe(404);
    expect((await raw('GET', '/limited/%2e%2e/v1/messages', bearer)).status).toBe(400);
    expect((await raw('GET', '/limited/echo/..%2F..%2Fv1', bearer)).status).toBe(400);
    expect((await raw('GET', '/limited/echo\\..\\x', bearer)).status).toBe(400);
    expect(fake.requests.length).toBe(before);
  });

  it('is no open proxy: absolute-form targets, CONNECT and upgrades reach nothing', async () => {
    await login(rig.store);
    const before = fake.requests.length;
    const { hostname, port } = new URL(rig.url);
    const absolute = await raw('GET', `${fake.url}/anthropic/echo`, bearer);
    expect(absolute.status).toBe(404);
    const connectAnswer = await new Promise<string>((resolve) => {
      const req = http.request({ hostname, port, method: 'CONNECT', path: new URL(fake.url).host, headers: bearer, agent: false });
      req.on('connect', (res) => resolve(`connected ${res.statusCode}`));
      req.on('response', (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', () => resolve('closed'));
      req.end();
    });
    expect(connectAnswer).not.toMatch(/^connected 2/);
    expect(fake.requests.length).toBe(before);
    // An upgrade request is at most forwarded as a plain request, never upgraded into a raw tunnel.
    const upgrade = await new Promise<string>((resolve) => {
      const req = http.request({ hostname, port, path: '/anthropic/echo', headers: { ...bearer, connection: 'upgrade', upgrade: 'websocket' }, agent: false });
      req.on('upgrade', () => resolve('upgraded'));
      req.on('response', (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', () => resolve('closed'));
      req.end();
    });
    expect(upgrade).not.toBe('upgraded');
    const last = fake.requests.at(-1)!;
    if (fake.requests.length > before) expect([last.headers.upgrade, last.headers.connection]).not.toContain('websocket');
  });

  it('enforces a route allowlist of methods and path prefixes', async () => {
    await login(rig.store, 'limited');
    const before = fake.requests.length;
    expect((await raw('POST', '/limited/echo', bearer, Buffer.from('{}'))).status).toBe(403);
    expect((await raw('GET', '/limited/echoes', bearer)).status).toBe(403);
    expect((await raw('GET', '/limited/v1/messages', bearer)).status).toBe(403);
    expect(fake.requests.length).toBe(before);
    const ok = await raw('GET', '/limited/echo?x=1', bearer);
    expect(ok.status).toBe(200);
    expect(fake.requests.at(-1)!.url).toBe('/base/echo?x=1');
    expect(rig.audit.at(-1)).toMatchObject({ route: 'limited', path: '/echo', status: 200 });
    expect(JSON.stringify(rig.audit)).not.toContain('x=1');
  });
});

describe('connections that hold the gateway without asking anything', () => {
  /** A gateway of its own, listening directly, with a short head deadline or a small connection cap. */
  async function own(o: { headDeadlineMs?: number; maxConnections?: number }): Promise<{ gateway: GatewayServer; port: number; refused: () => Record<string, number> }> {
    const refused: GatewayRefusedEntry[] = [];
    audits.push(refused);
    const gateway = new GatewayServer({
      routes: rig.routes,
      placeholder: PLACEHOLDER,
      credentials: rig.coordinator,
      keys: rig.keys,
      logger: rig.logger,
      audit: { record: (e) => void (e.kind === 'gateway_refused' ? refused.push(e) : undefined) },
      upstream: { ca: ca.caPem },
      ...o,
    });
    const url = await gateway.listen({ host: '127.0.0.1', port: 0 });
    const refusedNow = (): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const e of refused) for (const [k, n] of Object.entries(e.refused)) out[k] = (out[k] ?? 0) + n;
      return out;
    };
    return { gateway, port: Number(new URL(url).port), refused: refusedNow };
  }

  const get = (port: number, path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path, headers: bearer, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });

  const closed = (s: ReturnType<typeof connect>): Promise<number> => new Promise((resolve) => s.once('close', () => resolve(performance.now())));

  it('a client that sends no head, or trickles one, even after an answer on the same connection, is closed at the deadline and counted; others are served', async () => {
    await login(rig.store);
    const { gateway, port, refused } = await own({ headDeadlineMs: 1000 });
    try {
      const started = performance.now();
      const silent = Array.from({ length: 10 }, () => connect(port, '127.0.0.1'));
      const trickling = Array.from({ length: 10 }, () => connect(port, '127.0.0.1'));
      const timers: NodeJS.Timeout[] = [];
      // They read what they are sent (a client that does not would never see the server's end).
      for (const s of [...silent, ...trickling]) s.on('error', () => undefined).resume();
      const heldClosed = [...silent, ...trickling].map(closed);
      for (const s of trickling) {
        s.write('GET /anthropic/echo HTTP/1.1\r\nhost: x\r\n');
        // A byte every 200 ms: never idle, never done.
        timers.push(setInterval(() => s.writable && s.write('x-trickle: y\r\n'), 200));
      }
      // A keep-alive connection that was answered once, then trickles its next head.
      const keptAlive = connect(port, '127.0.0.1');
      keptAlive.on('error', () => undefined);
      const keptAliveClosed = closed(keptAlive);
      const firstAnswer = new Promise<string>((resolve) => keptAlive.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
      keptAlive.write(`GET /anthropic/echo HTTP/1.1\r\nhost: x\r\nauthorization: ${bearer.authorization}\r\n\r\n`);
      expect(await firstAnswer).toMatch(/^HTTP\/1\.1 200 /);
      keptAlive.resume();
      keptAlive.write('GET /anthropic/echo HTTP/1.1\r\n');
      timers.push(setInterval(() => keptAlive.writable && keptAlive.write('x-trickle: y\r\n'), 200));
      // Meanwhile a real client is answered.
      expect(await get(port, '/anthropic/echo')).toBe(200);
      const closedAt = await Promise.all([...heldClosed, keptAliveClosed]);
      for (const t of timers) clearInterval(t);
      for (const at of closedAt) expect(at - started).toBeGreaterThanOrEqual(900);
      // The server's side closes on its own schedule: each client saw its end already.
      await vi.waitFor(() => expect(gateway.connections).toBe(0), { timeout: 10_000, interval: 20 });
      await vi.waitFor(() => expect(refused()).toEqual({ slow_head: 21 }), { timeout: 10_000, interval: 100 });
    } finally {
      await gateway.stop();
    }
  });

  it('a pipelined request still being answered is not cut by the head deadline that follows the answer before it', async () => {
    await login(rig.store);
    const { gateway, port, refused } = await own({ headDeadlineMs: 800 });
    try {
      fake.holdGate();
      const s = connect(port, '127.0.0.1');
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString('latin1')));
      s.on('error', () => undefined);
      const head = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: x\r\nauthorization: ${bearer.authorization}\r\n\r\n`;
      // A quick answer, then a stream that outlives the deadline, sent together.
      s.write(head('/anthropic/echo') + head('/anthropic/sse-gate'));
      await vi.waitFor(() => expect(text).toContain('event: first'), { timeout: 10_000, interval: 20 });
      await new Promise((r) => setTimeout(r, 1600));
      fake.openGate();
      await vi.waitFor(() => expect(text).toContain('event: last'), { timeout: 10_000, interval: 20 });
      expect(text).not.toContain(' 408 ');
      expect(refused()).toEqual({});
      s.destroy();
    } finally {
      fake.openGate();
      await gateway.stop();
    }
  });

  it('connections past the cap are turned away and counted as busy; once the holders go, a client is served', async () => {
    await login(rig.store);
    const { gateway, port, refused } = await own({ maxConnections: 4 });
    try {
      const holders = Array.from({ length: 4 }, () => connect(port, '127.0.0.1'));
      for (const s of holders) s.on('error', () => undefined);
      await Promise.all(holders.map((s) => new Promise((r) => s.once('connect', r))));
      await vi.waitFor(() => expect(gateway.connections).toBe(4), { timeout: 10_000, interval: 20 });
      const extra = Array.from({ length: 3 }, () => connect(port, '127.0.0.1'));
      for (const s of extra) s.on('error', () => undefined);
      await Promise.all(extra.map(closed));
      await vi.waitFor(() => expect(refused()).toEqual({ busy: 3 }), { timeout: 10_000, interval: 100 });
      for (const s of holders) s.destroy();
      await vi.waitFor(() => expect(gateway.connections).toBe(0), { timeout: 10_000, interval: 20 });
      expect(await get(port, '/anthropic/echo')).toBe(200);
    } finally {
      await gateway.stop();
    }
  });

  it('refuses requests whose length is ambiguous (Content-Length with chunked, two lengths) with 400, counted, nothing upstream', async () => {
    await login(rig.store);
    const before = fake.requests.length;
    const { gateway, port, refused } = await own({});
    const send = (text: string): Promise<string> =>
      new Promise((resolve) => {
        const s = connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString('latin1')));
        s.on('error', () => undefined);
        s.on('close', () => resolve(got));
        s.end(text);
      });
    const head = `POST /anthropic/echo HTTP/1.1\r\nhost: x\r\nauthorization: ${bearer.authorization}\r\n`;
    const smuggled = `GET /anthropic/v1/models HTTP/1.1\r\nhost: x\r\n\r\n`;
    const answers = [
      await send(`${head}content-length: ${4 + smuggled.length}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`),
      await send(`${head}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n${smuggled}`),
      await send(`${head}content-length: 0\r\ncontent-length: ${smuggled.length}\r\n\r\n${smuggled}`),
    ];
    await gateway.stop();
    for (const a of answers) expect(a).toMatch(/^HTTP\/1\.1 400 /);
    expect(fake.requests.length).toBe(before);
    expect(refused()).toEqual({ bad_request: 3 });
  });
});

describe('the real credential never comes back', () => {
  it('masks the credential an upstream echoes in its body and drops a header carrying it', async () => {
    const token = await login(rig.store);
    const res = await raw('GET', '/anthropic/echo', { ...bearer, 'x-api-key': 'client-junk-value', cookie: 'session=abc' });
    expect(res.status).toBe(200);
    expect(res.text).not.toContain(token.access_token);
    expect(res.text).toContain('*'.repeat(token.access_token.length));
    expect(res.headers['x-echo-auth']).toBeUndefined();
    const seen = fake.requests.at(-1)!;
    expect(seen.headers['x-api-key']).toBeUndefined();
    expect(seen.headers.cookie).toBeUndefined();
    expect(rig.audit.at(-1)!.masked).toBe(1);
  });

  it('masks a credential split across two upstream chunks (SSE)', async () => {
    const token = await login(rig.store);
    const res = await raw('GET', '/anthropic/leak-split', bearer);
    expect(res.text).not.toContain(token.access_token);
    expect(res.text).toBe(`data: {"token":"${'*'.repeat(token.access_token.length)}"}\n\n`);
  });

  it('refuses a compressed answer it cannot scan', async () => {
    await login(rig.store);
    const res = await raw('GET', '/anthropic/gzip', bearer);
    expect(res.status).toBe(502);
    expect(rig.audit.at(-1)!.outcome).toBe('encoded_response');
  });
});

describe('streaming', () => {
  it('delivers the first SSE event before the upstream has finished', async () => {
    await login(rig.store);
    fake.holdGate();
    const first = await new Promise<{ text: string; res: http.IncomingMessage }>((resolve, reject) => {
      const req = http.request(`${rig.url}/anthropic/sse-gate`, { headers: bearer, agent: false }, (res) => {
        res.once('data', (d: Buffer) => resolve({ text: d.toString('utf8'), res }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(first.text).toBe('event: first\ndata: {"n":1}\n\n');
    const rest: Buffer[] = [];
    first.res.on('data', (d: Buffer) => rest.push(d));
    const ended = new Promise((r) => first.res.once('end', r));
    fake.openGate();
    await ended;
    expect(Buffer.concat(rest).toString('utf8')).toBe('event: last\ndata: {"n":2}\n\n');
  });

  it('aborts the upstream request when the client disconnects', async () => {
    await login(rig.store);
    fake.holdGate();
    const aborted = fake.abortedResponses;
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${rig.url}/anthropic/sse-gate`, { headers: bearer, agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => undefined);
      req.on('timeout', () => reject(new Error('timeout')));
      req.end();
    });
    const deadline = Date.now() + 10_000;
    while (fake.abortedResponses === aborted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(fake.abortedResponses).toBe(aborted + 1);
    fake.openGate();
    while (rig.audit.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(rig.audit.at(-1)!.outcome).toBe('client_closed');
  });

  it('streams a 50 MB upload: the upstream gets bytes before the client has sent them all', async () => {
    await login(rig.store);
    const total = 50 * 1024 * 1024;
    const block = Buffer.alloc(256 * 1024, 0x62);
    let lastChunkAt = 0;
    const body = Readable.from(
      (function* () {
        for (let sent = 0; sent < total; sent += block.length) {
          if (sent + block.length >= total) lastChunkAt = performance.now();
          yield block;
        }
      })(),
    );
    const res = await raw('POST', '/anthropic/upload', { ...bearer, 'content-type': 'application/octet-stream' }, body);
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ bytes: total });
    expect(fake.firstBodyByteAt).toBeGreaterThan(0);
    expect(fake.firstBodyByteAt).toBeLessThan(lastChunkAt);
    expect(rig.audit.at(-1)).toMatchObject({ bytesIn: total, status: 200 });
  });

  it('streams a 50 MB download', async () => {
    await login(rig.store);
    const res = await new Promise<number>((resolve, reject) => {
      http
        .get(`${rig.url}/anthropic/big?mb=50`, { headers: bearer, agent: false }, (r) => {
          let n = 0;
          r.on('data', (d: Buffer) => (n += d.length));
          r.on('end', () => resolve(n));
        })
        .on('error', reject);
    });
    expect(res).toBe(50 * 1024 * 1024);
  });
});

describe('refresh through the one credential path', () => {
  it('a 401 makes one refresh and one replay with the new token', async () => {
    const old = await login(rig.store);
    fake.accept = (c) => c !== null && c !== old.access_token;
    const refreshes = oidc.refreshSuccesses;
    const before = fake.requests.length;
    const msg = await anthropic().messages.create({ model: 'claude-fake', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
    expect(msg.content[0]).toMatchObject({ type: 'text' });
    expect(oidc.refreshSuccesses).toBe(refreshes + 1);
    const seen = fake.requests.slice(before);
    const now = rig.store.tokens.get('anthropic:default')!;
    expect(seen.map((r) => r.credential)).toEqual([old.access_token, now.access_token]);
    expect(seen[1]!.bodyText).toBe(seen[0]!.bodyText);
    expect(rig.audit.at(-1)).toMatchObject({ status: 200, refreshed: true });
  });

  it('a storm of 200 concurrent 401s makes exactly one refresh', async () => {
    const old = await login(rig.store);
    fake.accept = (c) => c !== null && c !== old.access_token;
    const refreshes = oidc.refreshSuccesses;
    const client = anthropic();
    const results = await Promise.all(
      Array.from({ length: 200 }, () => client.messages.create({ model: 'claude-fake', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] }).then(
        () => 'ok',
        (e: unknown) => String(e),
      )),
    );
    expect(results.filter((r) => r !== 'ok')).toEqual([]);
    expect(oidc.refreshSuccesses).toBe(refreshes + 1);
  });

  it('a revoked refresh token answers 401 telling to log in on the host', async () => {
    const old = await login(rig.store);
    await oidc.revoke(old.refresh_token!);
    fake.accept = (c) => c !== null && c !== old.access_token;
    const err = await anthropic()
      .messages.create({ model: 'claude-fake', max_tokens: 4, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.AuthenticationError);
    expect(String((err as Error).message)).toContain('credproxy login anthropic');
    await expectRefused({ credential_error: 1 }, { anthropic: 1 });
  });

  it('refreshes a near-expiry token before using it', async () => {
    const old = await login(rig.store);
    await rig.store.saveToken('anthropic', { ...old, expiry: Math.floor(Date.now() / 1000) + 20 });
    const refreshes = oidc.refreshSuccesses;
    const res = await raw('GET', '/anthropic/echo', bearer);
    expect(res.status).toBe(200);
    expect(oidc.refreshSuccesses).toBe(refreshes + 1);
    expect(fake.requests.at(-1)!.credential).not.toBe(old.access_token);
    expect(fake.requests.at(-1)!.credential).toBe(rig.store.tokens.get('anthropic:default')!.access_token);
  });

  it('answers 401 with the login hint when nothing is stored', async () => {
    const res = await raw('GET', '/anthropic/echo', bearer);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({ type: 'error', error: { type: 'authentication_error' } });
    expect(res.text).toContain('credproxy login anthropic');
  });
});
