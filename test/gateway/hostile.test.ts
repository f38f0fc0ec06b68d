import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseConfig, type CredproxyConfig } from '../../src/config.js';
import type { GatewayAuditEntry, GatewayRefusedEntry } from '../../src/gateway/audit.js';
import { buildRoutes } from '../../src/gateway/routes.js';
import { GatewayServer } from '../../src/gateway/server.js';
import { ProviderRegistry } from '../../src/oauth/index.js';
import { FileCooldownStore } from '../../src/refresh/cooldown.js';
import { RefreshCoordinator } from '../../src/refresh/coordinator.js';
import { Policy } from '../../src/server/policy.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';
import { capturingLogger } from '../refresh/fakes.js';

/**
 * A hostile process in the sandbox against the gateway: it holds the
 * placeholder and speaks raw HTTP/1.1 to it. Real HTTPS upstreams (one a
 * Node HTTP server, one a bare TLS socket that answers whatever bytes a test
 * wants), real key store, real gateway.
 */
const PLACEHOLDER = 'f'.repeat(16) + '0123456789abcdef'.repeat(3);
const CORP_KEY = 'sk-corp-real-key-canary-4b1e9d0c77';
const RAW_KEY = 'sk-raw-real-key-canary-8c2f6a1d93';
const RAWP_TOKEN = 'at-rawp-real-token-canary-1f6c3e9b20';

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

let ca: TestCa;
let api: Server;
let apiUrl: string;
/** What the HTTP upstream saw, request by request, as its own parser read them. */
const seen: Seen[] = [];
/** Request heads the HTTP upstream has read (a streamed body may still be on its way). */
let headsSeen = 0;
let onRequest: (req: IncomingMessage, res: ServerResponse, body: string) => void;
let rawApi: tls.Server;
/** What the bare TLS upstream writes back for each chunk of request bytes it reads. */
let rawAnswer: (socket: tls.TLSSocket, data: string) => void;
let config: CredproxyConfig;

interface Rig {
  gateway: GatewayServer;
  port: number;
  audit: GatewayAuditEntry[];
  refused: GatewayRefusedEntry[];
  coordinator: RefreshCoordinator;
  stateDir: string;
  logs: () => string;
}
let rig: Rig;

beforeAll(async () => {
  ca = createTestCa();
  api = createServer({ cert: ca.certPem, key: ca.keyPem }, (req, res) => {
    headsSeen++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/token') {
        // The rawp provider's token endpoint: every refresh is refused (not for a revoked login).
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end('{"error":"invalid_request"}');
        return;
      }
      const body = Buffer.concat(chunks).toString('latin1');
      seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, body });
      onRequest(req, res, body);
    });
  });
  await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
  apiUrl = `https://127.0.0.1:${(api.address() as AddressInfo).port}`;
  rawApi = tls.createServer({ cert: ca.certPem, key: ca.keyPem }, (s) => {
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => rawAnswer(s, d.toString('latin1')));
  });
  await new Promise<void>((r) => rawApi.listen(0, '127.0.0.1', r));
  const rawUrl = `https://127.0.0.1:${(rawApi.address() as AddressInfo).port}`;
  config = parseConfig(
    JSON.stringify({
      // An OAuth route whose refresh fails: its upstream's 401 is held for a replay, then passed on.
      providers: {
        rawp: { flow: 'device_code', device_authorization_endpoint: `${apiUrl}/device`, token_endpoint: `${apiUrl}/token`, client_id: 'x', api_base: `${rawUrl}/v1` },
      },
      keys: {
        corp: { route: { api_base: `${apiUrl}/v1`, header: 'authorization', methods: ['GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS'], path_prefixes: ['/allowed'] } },
        raw: { route: { api_base: `${rawUrl}/v1`, header: 'x-api-key' } },
      },
    }),
    'config.json',
  );
});

afterAll(async () => {
  await new Promise<void>((r) => api.close(() => r()));
  await new Promise<void>((r) => rawApi.close(() => r()));
  ca?.remove();
});

beforeEach(async () => {
  seen.length = 0;
  onRequest = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  };
  rawAnswer = () => undefined;
  const stateDir = await mkdtemp(join(tmpdir(), 'credproxy-gw-hostile-'));
  const keys = new MemoryKeyStore();
  await keys.saveKey('corp', CORP_KEY);
  await keys.saveKey('raw', RAW_KEY);
  const store = new MemoryTokenStore();
  await store.saveToken('rawp', { access_token: RAWP_TOKEN, refresh_token: 'rt-rawp-canary-5d8e2b7a41', expiry: Math.floor(Date.now() / 1000) + 3600 });
  const { logger, output } = capturingLogger();
  const coordinator = new RefreshCoordinator({ store, providers: new ProviderRegistry({ config }), cooldown: FileCooldownStore.inStateDir(stateDir), logger, retryDelaysMs: [] });
  const table = buildRoutes({ policy: Policy.from({ allow: ['rawp'], keys: ['corp', 'raw'], allowAll: false, readOnly: false }), config });
  const audit: GatewayAuditEntry[] = [];
  const refused: GatewayRefusedEntry[] = [];
  const gateway = new GatewayServer({
    routes: table.routes,
    placeholder: PLACEHOLDER,
    credentials: coordinator,
    keys,
    logger,
    audit: { record: (e) => void (e.kind === 'gateway' ? audit.push(e) : refused.push(e)) },
    upstream: { ca: ca.caPem },
  });
  const url = await gateway.listen({ host: '127.0.0.1', port: 0 });
  rig = { gateway, port: Number(new URL(url).port), audit, refused, coordinator, stateDir, logs: output };
});

afterEach(async () => {
  await rig.gateway.stop();
  await rig.coordinator.close();
  await rm(rig.stateDir, { recursive: true, force: true });
  const text = JSON.stringify([rig.audit, rig.refused]) + rig.logs();
  for (const secret of [CORP_KEY, RAW_KEY, RAWP_TOKEN, PLACEHOLDER]) expect(text).not.toContain(secret);
});

const auth = `authorization: Bearer ${PLACEHOLDER}\r\n`;

async function corpKeys(): Promise<MemoryKeyStore> {
  const keys = new MemoryKeyStore();
  await keys.saveKey('corp', CORP_KEY);
  return keys;
}

/** A raw connection to the gateway: write bytes, read everything it answers. */
function client(): { socket: Socket; text: () => string; closed: Promise<void> } {
  const socket = connect(rig.port, '127.0.0.1');
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  return { socket, text: () => text, closed };
}

/** Status lines in what a connection got (an answer follows the body before it on the same line). */
const answers = (text: string): number => (text.match(/HTTP\/1\.1 \d{3} /g) ?? []).length;

describe('request bodies cannot smuggle requests to the upstream', () => {
  it('a chunked body on a GET, HEAD, DELETE or OPTIONS reaches the upstream framed, never as a second request carrying the real key', async () => {
    for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
      seen.length = 0;
      // An unterminated head: the next request on a reused upstream connection would complete it with the real Authorization.
      const smuggled = 'DELETE /v1/admin/everything HTTP/1.1\r\nx-pad: ';
      const body = `${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`;
      const c = client();
      c.socket.write(`${method} /keys/corp/allowed/a HTTP/1.1\r\nhost: x\r\n${auth}transfer-encoding: chunked\r\n\r\n${body}`);
      await vi.waitFor(() => expect(answers(c.text())).toBe(1), { timeout: 10_000, interval: 20 });
      // The next request, as the same sandbox sends it: the gateway would reuse the pooled upstream connection.
      c.socket.write(`GET /keys/corp/allowed/b HTTP/1.1\r\nhost: x\r\n${auth}\r\n`);
      await vi.waitFor(() => expect(answers(c.text())).toBe(2), { timeout: 10_000, interval: 20 });
      c.socket.destroy();
      expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([`${method} /v1/allowed/a`, 'GET /v1/allowed/b']);
      expect(seen[0]!.body).toBe(smuggled);
      for (const s of seen) expect(s.authorization).toBe(`Bearer ${CORP_KEY}`);
    }
  });

  it('a Connection header naming content-length does not leave a large body unframed', async () => {
    const size = 1024 * 1024 + 100;
    const smuggled = 'DELETE /v1/admin/everything HTTP/1.1\r\nx-pad: ';
    const body = Buffer.concat([Buffer.from(smuggled), Buffer.alloc(size - smuggled.length, 0x61)]);
    const c = client();
    // Over the replay limit, so it streams; a Content-Length the client lists as hop-by-hop is not forwarded.
    c.socket.write(`GET /keys/corp/allowed/a HTTP/1.1\r\nhost: x\r\n${auth}connection: keep-alive, content-length\r\ncontent-length: ${size}\r\n\r\n`);
    c.socket.write(body);
    await vi.waitFor(() => expect(answers(c.text())).toBe(1), { timeout: 10_000, interval: 20 });
    c.socket.write(`GET /keys/corp/allowed/b HTTP/1.1\r\nhost: x\r\n${auth}\r\n`);
    await vi.waitFor(() => expect(answers(c.text())).toBe(2), { timeout: 10_000, interval: 20 });
    c.socket.destroy();
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /v1/allowed/a', 'GET /v1/allowed/b']);
    expect(seen[0]!.body.length).toBe(size);
  });
});

describe('paths stay under the route', () => {
  it('a dot segment with a path parameter (..;) is refused like any other, nothing upstream', async () => {
    // Servlet containers and others read `..;x` as `..`: /allowed/..;/admin would be /admin there.
    for (const path of ['/allowed/..;/admin', '/allowed/..;x/admin', '/allowed/%2e%2e;/admin', '/allowed/.;/x']) {
      const c = client();
      c.socket.write(`GET /keys/corp${path} HTTP/1.1\r\nhost: x\r\n${auth}connection: close\r\n\r\n`);
      await c.closed;
      expect(c.text(), path).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect(seen).toEqual([]);
  });
});

describe('nothing the upstream sends brings the real key back', () => {
  /** One request on the `raw` key route, or the `rawp` OAuth one; the answer's bytes as the client got them. */
  async function viaRaw(response: (secret: string) => string, route: 'keys/raw' | 'rawp' = 'keys/raw'): Promise<string> {
    const secret = route === 'rawp' ? RAWP_TOKEN : RAW_KEY;
    rawAnswer = (s) => s.write(response(secret), 'latin1');
    const c = client();
    // A small body: on the OAuth route a 401 is held for a replay, and passed on whole when the refresh fails.
    c.socket.write(`POST /${route}/models HTTP/1.1\r\nhost: x\r\nx-api-key: ${PLACEHOLDER}\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}`);
    await c.closed;
    return c.text();
  }

  it('a status line or a header name carrying it, streamed or held for a replay', async () => {
    for (const route of ['keys/raw', 'rawp'] as const) {
      const got = await viaRaw((secret) => `HTTP/1.1 401 invalid credential ${secret}\r\nx-${secret}: 1\r\ncontent-length: 2\r\n\r\nno`, route);
      expect(got).toMatch(/^HTTP\/1\.1 401 Unauthorized\r\n/);
      expect(got).not.toContain(route === 'rawp' ? RAWP_TOKEN : RAW_KEY);
      expect(got.endsWith('\r\n\r\nno')).toBe(true);
    }
  });

  it('a body under a content or transfer coding it cannot scan, streamed or held for a replay', async () => {
    const zipped = (secret: string): string => gzipSync(Buffer.from(`{"echo":"${secret}"}`)).toString('latin1');
    const chunk = (data: string): string => `${data.length.toString(16)}\r\n${data}\r\n0\r\n\r\n`;
    const cases: Array<[route: 'keys/raw' | 'rawp', answer: (secret: string) => string]> = [
      ['keys/raw', (secret) => `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n${chunk(zipped(secret))}`],
      ['rawp', (secret) => `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n${chunk(zipped(secret))}`],
      ['rawp', (secret) => `HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: ${zipped(secret).length}\r\n\r\n${zipped(secret)}`],
    ];
    for (const [route, answer] of cases) {
      const got = await viaRaw(answer, route);
      const secret = route === 'rawp' ? RAWP_TOKEN : RAW_KEY;
      // What the client would decode, had the gateway passed the coded bytes on.
      const at = got.indexOf('\r\n\r\n') + 4;
      const head = got.slice(0, at).toLowerCase();
      const framed = head.includes('transfer-encoding: chunked');
      const size = framed ? parseInt(got.slice(at), 16) : got.length - at;
      if (size > 0) {
        const coded = Buffer.from(framed ? got.slice(got.indexOf('\r\n', at) + 2).slice(0, size) : got.slice(at), 'latin1');
        if (coded[0] === 0x1f) expect(gunzipSync(coded).toString('latin1')).not.toContain(secret);
      }
      expect(got).toMatch(/^HTTP\/1\.1 502 /);
      await vi.waitFor(() => expect(rig.audit.at(-1)).toMatchObject({ route, outcome: 'encoded_response' }), { timeout: 10_000, interval: 20 });
    }
  });
});

describe('one connection cannot multiply what the host holds', () => {
  it('bodies held for a replay share one budget: past it, a small body streams', async () => {
    const own = new GatewayServer({ routes: buildRoutes({ policy: Policy.from({ allow: [], keys: ['corp'], allowAll: false, readOnly: false }), config }).routes, placeholder: PLACEHOLDER, credentials: rig.coordinator, keys: await corpKeys(), logger: capturingLogger().logger, upstream: { ca: ca.caPem }, replayBudgetBytes: 2 * 1024 * 1024 });
    const port = Number(new URL(await own.listen({ host: '127.0.0.1', port: 0 })).port);
    try {
      const held: ServerResponse[] = [];
      onRequest = (_req, res) => void held.push(res);
      const open = (): { socket: Socket; text: () => string } => {
        const socket = connect(port, '127.0.0.1');
        let text = '';
        socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
        socket.on('error', () => undefined);
        return { socket, text: () => text };
      };
      const head = (size: number): string => `POST /keys/corp/allowed/x HTTP/1.1\r\nhost: x\r\n${auth}content-length: ${size}\r\n\r\n`;
      /** Sends a 1,000-byte body's first half: true when the upstream has the head before the rest (streamed). */
      const streams = async (): Promise<boolean> => {
        const before = headsSeen;
        const bodies = seen.length;
        const c = open();
        c.socket.write(head(1000) + 'a'.repeat(500));
        const streamed = await vi.waitFor(() => expect(headsSeen).toBe(before + 1), { timeout: 1000, interval: 20 }).then(() => true, () => false);
        c.socket.write('a'.repeat(500));
        await vi.waitFor(() => expect(seen.length).toBe(bodies + 1), { timeout: 10_000, interval: 20 });
        expect(seen.at(-1)!.body.length).toBe(1000);
        held.pop()!.end('{}');
        await vi.waitFor(() => expect(answers(c.text())).toBe(1), { timeout: 10_000, interval: 20 });
        c.socket.destroy();
        return streamed;
      };
      expect(await streams()).toBe(false);
      // Two held 1 MiB bodies (the upstream has not answered them) take the whole budget.
      const big = [open(), open()];
      for (const c of big) c.socket.write(Buffer.concat([Buffer.from(head(1024 * 1024)), Buffer.alloc(1024 * 1024, 0x62)]));
      await vi.waitFor(() => expect(held.length).toBe(2), { timeout: 10_000, interval: 20 });
      expect(await streams()).toBe(true);
      for (const res of held.splice(0)) res.end('{}');
      await vi.waitFor(() => expect(big.map((c) => answers(c.text()))).toEqual([1, 1]), { timeout: 10_000, interval: 20 });
      // Answered: their share is free again.
      expect(await streams()).toBe(false);
      for (const c of big) c.socket.destroy();
    } finally {
      await own.stop();
    }
  });

  it('pipelined requests go upstream one at a time, and a connection that piles them up is cut off', async () => {
    const held: ServerResponse[] = [];
    onRequest = (_req, res) => void held.push(res);
    const release = (): void => {
      for (const res of held.splice(0)) res.end('{}');
    };
    // Each of these could hold a 1 MiB body for a replay and an upstream socket: 300 of them once held 300 MiB.
    const post = (n: number): string => `POST /keys/corp/allowed/${n} HTTP/1.1\r\nhost: x\r\n${auth}content-length: 2\r\n\r\n{}`;
    const c = client();
    c.socket.write(Array.from({ length: 5 }, (_, i) => post(i)).join(''));
    await vi.waitFor(() => expect(seen.length).toBe(1), { timeout: 10_000, interval: 20 });
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.length).toBe(1);
    // Answered one by one, in order, each before the next goes upstream.
    for (let i = 1; i <= 5; i++) {
      release();
      await vi.waitFor(() => expect(answers(c.text())).toBe(i), { timeout: 10_000, interval: 20 });
      if (i < 5) await vi.waitFor(() => expect(seen.length).toBe(i + 1), { timeout: 10_000, interval: 20 });
    }
    expect(seen.map((s) => s.url)).toEqual([0, 1, 2, 3, 4].map((i) => `/v1/allowed/${i}`));
    c.socket.destroy();

    seen.length = 0;
    const flood = client();
    flood.socket.write(Array.from({ length: 200 }, (_, i) => post(i)).join(''));
    await flood.closed;
    await new Promise((r) => setTimeout(r, 300));
    expect(seen.length).toBeLessThanOrEqual(1);
    release();
    await vi.waitFor(() => expect(rig.refused.some((e) => (e.refused.pipelined ?? 0) > 0)).toBe(true), { timeout: 10_000, interval: 100 });
  });
});

describe('the audit cannot be flooded from the sandbox', () => {
  it('requests abandoned before anything went upstream are counted, not given a line each', async () => {
    const n = 150;
    for (let i = 0; i < n; i++) {
      const c = client();
      // The head with the placeholder and part of the body, then a reset.
      c.socket.write(`POST /keys/corp/allowed/x HTTP/1.1\r\nhost: x\r\n${auth}content-length: 100\r\n\r\n{"a":`);
      await vi.waitFor(() => expect(rig.gateway.connections).toBeGreaterThan(0), { timeout: 10_000, interval: 5 });
      await new Promise((r) => setTimeout(r, 5));
      c.socket.resetAndDestroy();
      await c.closed;
    }
    await vi.waitFor(() => expect(rig.gateway.connections).toBe(0), { timeout: 10_000, interval: 20 });
    const counted = (): number => rig.refused.reduce((sum, e) => sum + (e.refused.abandoned ?? 0), 0);
    await vi.waitFor(() => expect(counted()).toBe(n), { timeout: 10_000, interval: 100 });
    expect(rig.audit).toEqual([]);
    expect(seen).toEqual([]);
    // A request that did go upstream keeps its own line when its client goes away.
    onRequest = () => undefined;
    const c = client();
    c.socket.write(`GET /keys/corp/allowed/slow HTTP/1.1\r\nhost: x\r\n${auth}\r\n`);
    await vi.waitFor(() => expect(seen.length).toBe(1), { timeout: 10_000, interval: 20 });
    c.socket.destroy();
    await vi.waitFor(() => expect(rig.audit).toMatchObject([{ route: 'keys/corp', path: '/allowed/slow', outcome: 'client_closed' }]), { timeout: 10_000, interval: 20 });
  });
});
