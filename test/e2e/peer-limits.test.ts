import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';
import { frameOf, RawClient } from '../support/raw-client.js';

/**
 * Issue 11 §4 against a real `serve`: limits hold per peer across
 * connections, idle connections are closed by the server (the client
 * reconnects), a flood of idle connections cannot lock a client out, and
 * clients that never read their answers do not grow the server.
 */
const KEY = `sk-peer-${process.pid}`;

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

describe('per-peer limits and idle connections (real serve)', () => {
  let host: HostEnv;
  let serve: ServeProcess;
  const raws: RawClient[] = [];

  async function authed(): Promise<RawClient> {
    const c = await RawClient.connect(serve.socket);
    raws.push(c);
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token })).toMatchObject({ ok: true });
    return c;
  }

  beforeAll(async () => {
    host = makeHostEnv({ CREDPROXY_LOG_LEVEL: 'warn', CREDPROXY_IDLE_TIMEOUT_SECONDS: '2' });
    expect((await runCli(['key', 'set', 'k'], { env: host.env, input: KEY })).code).toBe(0);
    serve = await startServe(['--allow-key', 'k'], host.env);
  });
  afterAll(async () => {
    for (const c of raws) c.close();
    await serve?.stop();
    host?.cleanup();
  });

  it('the rate limit holds per peer: 100 connections together get no more than the peer limit per second', async () => {
    const conns = await Promise.all(Array.from({ length: 100 }, () => authed()));
    const started = Date.now();
    // Each connection asks 16 at once (its in-flight limit), 1,600 in all.
    for (const [i, c] of conns.entries()) c.sendRaw(Buffer.concat(Array.from({ length: 16 }, (_, j) => frameOf({ v: 1, id: `p${i}-${j}`, op: 'get_api_key', payload: { name: 'k' } }))));
    for (const c of conns) await c.waitUntil(() => c.frames.filter((f) => typeof f.id === 'string').length === 16, 20_000, 'all answers');
    const elapsedS = (Date.now() - started) / 1000;
    const served = conns.reduce((n, c) => n + c.frames.filter((f) => f.ok === true && typeof f.id === 'string').length, 0);
    // Per connection alone this would be all 1,600; the peer limit is 240 per rolling second.
    expect(served).toBeLessThanOrEqual(240 * Math.ceil(elapsedS + 1));
    expect(served).toBeGreaterThan(0);
    const limited = conns.flatMap((c) => c.frames).filter((f) => f.code === 'RATE_LIMITED');
    expect(limited.length).toBe(1600 - served);
    for (const c of conns) c.close();
  });

  it('closes idle connections on the server; the client reconnects on its next call', async () => {
    const idle = await authed();
    const client = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    try {
      expect((await client.request('get_api_key', { name: 'k' })).key).toBe(KEY);
      await idle.waitUntil(() => idle.isClosed, 15_000, 'the server to close the idle connection');
      await new Promise((r) => setTimeout(r, 500));
      expect((await client.request('get_api_key', { name: 'k' })).key).toBe(KEY);
    } finally {
      await client.close();
    }
  }, 30_000);

  it('300 idle authenticated connections from the sandbox cannot lock out a new client (the longest-idle are closed)', async () => {
    const flood = await Promise.all(Array.from({ length: 300 }, () => authed()));
    const client = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    try {
      expect((await client.request('get_api_key', { name: 'k' })).key).toBe(KEY);
    } finally {
      await client.close();
    }
    // Past the per-peer cap (256), the oldest idle ones were closed to make room.
    await new Promise((r) => setTimeout(r, 200));
    expect(flood.filter((c) => c.isClosed).length).toBeGreaterThan(0);
    for (const c of flood) c.close();
  }, 60_000);

  it('clients that never read their answers do not grow the server: reading stops, memory returns near idle', async () => {
    const before = rssKb(serve.proc.pid!);
    const frames = Buffer.concat(Array.from({ length: 2000 }, (_, j) => frameOf({ v: 1, id: `n${j}`, op: 'get_api_key', payload: { name: 'k' } })));
    const stuck: RawClient[] = [];
    for (let i = 0; i < 300; i++) {
      const c = await authed();
      // Never read: the test's side stops reading at once.
      c.socket.pause();
      c.sendRaw(frames);
      stuck.push(c);
    }
    await new Promise((r) => setTimeout(r, 1500));
    const during = rssKb(serve.proc.pid!);
    for (const c of stuck) c.close();
    // Idle timeout (2 s) and closes; then the server is served normally again.
    await new Promise((r) => setTimeout(r, 4000));
    const after = rssKb(serve.proc.pid!);
    const client = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    expect((await client.request('get_api_key', { name: 'k' })).key).toBe(KEY);
    await client.close();
    // 300 × 2,000 requests would be 600,000 answers if the server kept reading; it holds at most a chunk each.
    expect(during - before).toBeLessThan(150 * 1024);
    // Back near idle: V8's heap after a full collection, and glibc's arenas trimmed (without the trim ~45 MiB stayed).
    expect(after - before, `RSS ${before} kB idle, ${during} kB during, ${after} kB after`).toBeLessThan(16 * 1024);
  }, 60_000);
});
