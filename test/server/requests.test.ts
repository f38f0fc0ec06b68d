import { afterEach, describe, expect, it } from 'vitest';
import { frameOf } from '../support/raw-client.js';
import { startHarness, until, type Harness } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('request ids', () => {
  it('answers a request without a string id with INVALID_REQUEST and no id', async () => {
    h = await startHarness();
    const c = await h.client();
    c.send({ v: 1, op: 'list_api_keys' });
    c.send({ v: 1, id: 42, op: 'list_api_keys' });
    c.send({ v: 1, id: '', op: 'list_api_keys' });
    c.send({ v: 1, id: 'x'.repeat(257), op: 'list_api_keys' });
    await c.waitUntil(() => c.frames.length === 5);
    for (const f of c.frames.slice(1)) {
      expect(f).toEqual({ v: 1, ok: false, code: 'INVALID_REQUEST', error: 'request without a valid string id' });
    }
    expect(h.keys.calls).toBe(0);
  });

  it('refuses an id already in flight, and still answers the first request', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v1');
    h.keys.gate.hold('k');
    const c = await h.client();
    c.fire('get_api_key', { name: 'k' }, 'dup');
    await until(() => h!.keys.gate.entered('k') === 1);
    c.fire('get_api_key', { name: 'k' }, 'dup');
    await c.waitUntil(() => c.frames.length === 2);
    expect(c.frames[1]).toMatchObject({ id: 'dup', ok: false, code: 'INVALID_REQUEST', error: 'a request with this id is already in flight' });
    h.keys.gate.release('k');
    await c.waitUntil(() => c.frames.length === 3);
    expect(c.frames[2]).toMatchObject({ id: 'dup', ok: true, data: { key: 'v1' } });
    expect(h.keys.calls).toBe(1);
    // Once answered, the id may be used again.
    c.fire('get_api_key', { name: 'k' }, 'dup');
    await c.waitUntil(() => c.frames.length === 4);
    expect(c.frames[3]).toMatchObject({ id: 'dup', ok: true });
  });
});

describe('concurrency', () => {
  it('answers pipelined requests by id, in the order they finish', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('slow', 's');
    await h.keys.inner.saveKey('fast', 'f');
    h.keys.gate.hold('slow');
    const c = await h.client();
    c.sendRaw(
      Buffer.concat([
        frameOf({ v: 1, id: 'one', op: 'get_api_key', payload: { name: 'slow' } }),
        frameOf({ v: 1, id: 'two', op: 'get_api_key', payload: { name: 'fast' } }),
      ]),
    );
    expect(await c.answerFor('two')).toMatchObject({ ok: true, data: { key: 'f' } });
    expect(c.frames.some((f) => f.id === 'one')).toBe(false);
    h.keys.gate.release('slow');
    expect(await c.answerFor('one')).toMatchObject({ ok: true, data: { key: 's' } });
    expect(c.frames.map((f) => f.id)).toEqual([undefined, 'two', 'one']);
  });

  it('cancel drops the answer of a request in flight; the id is free again', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    const c = await h.client();
    c.fire('get_api_key', { name: 'k' }, 'target');
    await until(() => h!.keys.gate.entered('k') === 1);
    expect(await c.request('cancel', { targetId: 'target' })).toMatchObject({ ok: true, data: { cancelled: true } });
    expect(await c.request('cancel', { targetId: 'target' })).toMatchObject({ ok: true, data: { cancelled: false } });
    expect(await c.request('cancel', { targetId: 'never-sent' })).toMatchObject({ ok: true, data: { cancelled: false } });
    h.keys.gate.release('k');
    expect(await c.request('get_api_key', { name: 'k' }, 'target')).toMatchObject({ ok: true });
    await sleep(50);
    expect(c.frames.filter((f) => f.id === 'target')).toHaveLength(1);
    await h.server.stop();
    const audit = await h.auditLines();
    expect(audit.filter((l) => l.op === 'get_api_key').map((l) => l.result)).toEqual(['CANCELLED', 'OK']);
  });

  it('a request cannot cancel itself', async () => {
    h = await startHarness();
    const c = await h.client();
    expect(await c.request('cancel', { targetId: 'self' }, 'self')).toMatchObject({ ok: true, data: { cancelled: false } });
  });
});

describe('limits', () => {
  it('allows 60 requests per second, refuses the rest with retryAfter 1', async () => {
    h = await startHarness();
    const c = await h.client();
    // Batches of 15 stay under the in-flight cap, so only the rate limit speaks.
    const batches = [0, 1, 2, 3, 4].map((b) => Array.from({ length: b < 4 ? 15 : 10 }, (_, i) => `q${b}-${i}`));
    const t0 = Date.now();
    for (const ids of batches) {
      c.sendRaw(Buffer.concat(ids.map((id) => frameOf({ v: 1, id, op: 'list_api_keys' }))));
      await c.answerFor(ids[ids.length - 1]!);
    }
    expect(Date.now() - t0).toBeLessThan(900);
    const answers = batches.flat().map((id) => c.frames.find((f) => f.id === id)!);
    expect(answers.slice(0, 60).every((a) => a.ok === true)).toBe(true);
    for (const r of answers.slice(60)) expect(r).toMatchObject({ ok: false, code: 'RATE_LIMITED', retryAfter: 1 });
    await sleep(1050);
    expect(await c.request('list_api_keys')).toMatchObject({ ok: true });
  });

  it('does not count refused requests towards the window', async () => {
    h = await startHarness({ limits: { requestsPerWindow: 5, windowMs: 1000 } });
    const c = await h.client();
    const burst = (prefix: string, n: number): string[] => {
      const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
      c.sendRaw(Buffer.concat(ids.map((id) => frameOf({ v: 1, id, op: 'list_api_keys' }))));
      return ids;
    };
    const tFirst = Date.now();
    const first = burst('a', 5);
    await c.answerFor(first[4]!);
    await sleep(300);
    // Inside the window: all refused. Were they counted, the window would
    // stay full until a second after them.
    const refused = burst('b', 20);
    await c.answerFor(refused[19]!);
    expect(Date.now() - tFirst).toBeLessThan(1000);
    expect(refused.every((id) => c.frames.find((f) => f.id === id)!.code === 'RATE_LIMITED')).toBe(true);
    await sleep(tFirst + 1050 - Date.now());
    const again = burst('c', 5);
    await c.answerFor(again[4]!);
    expect(again.map((id) => c.frames.find((f) => f.id === id)!.ok)).toEqual([true, true, true, true, true]);
  });

  it('caps requests in flight at 16; cancel is exempt; a cancelled request keeps its slot until its work ends', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    const c = await h.client();
    for (let i = 0; i < 16; i++) c.fire('get_api_key', { name: 'k' }, `f${i}`);
    await until(() => h!.keys.gate.entered('k') === 16);
    expect(await c.request('get_api_key', { name: 'k' }, 'f16')).toMatchObject({ ok: false, code: 'RATE_LIMITED', retryAfter: 1 });
    expect(await c.request('cancel', { targetId: 'f0' })).toMatchObject({ ok: true, data: { cancelled: true } });
    expect(await c.request('list_api_keys', undefined, 'f17')).toMatchObject({ ok: false, code: 'RATE_LIMITED' });
    h.keys.gate.release('k');
    await c.waitUntil(() => c.frames.filter((f) => f.ok === true && typeof f.id === 'string' && /^f\d+$/.test(f.id)).length === 15);
    expect(c.frames.some((f) => f.id === 'f0')).toBe(false);
    expect(await c.request('list_api_keys')).toMatchObject({ ok: true });
  });

  it('bounds a store call with the host-op timeout', async () => {
    h = await startHarness({ timeouts: { hostOpMs: 150, credentialOpMs: 250 } });
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    h.tokens.gate.hold('anthropic');
    const c = await h.client();
    const t0 = Date.now();
    expect(await c.request('get_api_key', { name: 'k' })).toMatchObject({ ok: false, code: 'INTERNAL_ERROR', error: 'host operation timed out after 1 s' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
    expect(await c.request('get_token', { provider: 'anthropic' })).toMatchObject({ ok: false, code: 'INTERNAL_ERROR' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(380);
  });

  it('drops a client that sends requests but never reads its answers', async () => {
    h = await startHarness({ maxOutputBytes: 128 * 1024, limits: { requestsPerWindow: 1000 } });
    await h.keys.inner.saveKey('big', 'B'.repeat(60_000));
    const c = await h.client();
    c.socket.pause();
    const ids = Array.from({ length: 40 }, (_, i) => `b${i}`);
    c.sendRaw(Buffer.concat(ids.map((id) => frameOf({ v: 1, id, op: 'get_api_key', payload: { name: 'big' } }))));
    await until(() => h!.server.connectionCount === 0, 5000, 'the server to drop the client');
    c.socket.resume();
    await c.closed;
    expect(c.frames.length).toBeLessThan(41);
  });

  it('stops reading requests while a client does not read its answers, and resumes when it does', async () => {
    h = await startHarness({ limits: { requestsPerWindow: 10_000 } });
    await h.keys.inner.saveKey('big', 'B'.repeat(60_000));
    const c = await h.client();
    c.socket.pause();
    const batch = (prefix: string): string[] => {
      const ids = Array.from({ length: 16 }, (_, i) => `${prefix}${i}`);
      c.sendRaw(Buffer.concat(ids.map((id) => frameOf({ v: 1, id, op: 'get_api_key', payload: { name: 'big' } }))));
      return ids;
    };
    batch('a');
    await until(() => h!.keys.calls === 16);
    await sleep(100);
    const second = batch('b');
    await sleep(200);
    // ~1 MB of answers sits unread: the server has stopped taking requests.
    expect(h.keys.calls).toBe(16);
    expect(h.server.connectionCount).toBe(1);
    c.socket.resume();
    await c.answerFor(second[15]!, 5000);
    expect(h.keys.calls).toBe(32);
    expect(c.frames.filter((f) => f.ok === true)).toHaveLength(33);
    expect(c.isClosed).toBe(false);
  });

  it('answers a client that half-closes after sending', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    const c = await h.client();
    c.fire('get_api_key', { name: 'k' }, 'late');
    await until(() => h!.keys.gate.entered('k') === 1);
    c.socket.end();
    await sleep(30);
    h.keys.gate.release('k');
    expect(await c.answerFor('late')).toMatchObject({ ok: true, data: { key: 'v' } });
    await c.closed;
  });
});
