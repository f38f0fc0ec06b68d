import { afterEach, describe, expect, it } from 'vitest';
import { frameOf } from '../support/raw-client.js';
import { CAPABILITY, startHarness, type Harness } from './helpers.js';

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

describe('handshake', () => {
  it('accepts the right capability token and version 1', async () => {
    h = await startHarness();
    const c = await h.raw();
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY })).toEqual({
      v: 1,
      op: 'handshake',
      ok: true,
      data: { version: 1 },
    });
  });

  it('agrees 2 with a client offering 1..2 (SPEC §8), 1 with a version-1-only client', async () => {
    h = await startHarness();
    const c = await h.raw();
    expect(await c.handshake({ minVersion: 1, maxVersion: 2, capabilityToken: CAPABILITY })).toEqual({ v: 1, op: 'handshake', ok: true, data: { version: 2 } });
    // Requests may carry v 1 or the agreed 2; answers carry the agreed version.
    expect(await c.request('list_providers')).toMatchObject({ v: 2, ok: true });
    c.v = 2;
    expect(await c.request('list_providers')).toMatchObject({ v: 2, ok: true });
    c.v = 3;
    expect(await c.request('list_providers')).toMatchObject({ v: 2, ok: false, code: 'INVALID_REQUEST' });
    const old = await h.raw();
    expect(await old.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY })).toMatchObject({ ok: true, data: { version: 1 } });
    old.v = 2;
    expect(await old.request('list_providers')).toMatchObject({ v: 1, ok: false, code: 'INVALID_REQUEST' });
    const future = await h.raw();
    expect(await future.handshake({ minVersion: 2, maxVersion: 9, capabilityToken: CAPABILITY })).toMatchObject({ ok: true, data: { version: 2 } });
  });

  it('refuses a wrong capability token with UNAUTHORIZED and closes, before looking at the version', async () => {
    h = await startHarness();
    const c = await h.raw();
    const r = await c.handshake({ minVersion: 7, maxVersion: 9, capabilityToken: 'f'.repeat(64) });
    expect(r).toEqual({ v: 1, op: 'handshake', ok: false, code: 'UNAUTHORIZED', error: 'capability token missing or wrong' });
    await c.closed;
    expect(c.frames).toHaveLength(1);
  });

  it('refuses a missing capability token, and a malformed payload, as UNAUTHORIZED', async () => {
    h = await startHarness();
    const a = await h.raw();
    expect(await a.handshake({ minVersion: 1, maxVersion: 1 })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await a.closed;
    const b = await h.raw();
    b.send({ v: 1, op: 'handshake', payload: 'nonsense' });
    expect(await b.frameAt(0)).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await b.closed;
  });

  it('answers UNKNOWN_VERSION and closes when the range excludes 1 and 2', async () => {
    h = await startHarness();
    const c = await h.raw();
    const r = await c.handshake({ minVersion: 3, maxVersion: 4, capabilityToken: CAPABILITY });
    expect(r).toMatchObject({ v: 1, op: 'handshake', ok: false, code: 'UNKNOWN_VERSION' });
    await c.closed;
  });

  it('answers INVALID_REQUEST and closes for a malformed handshake from an authenticated peer', async () => {
    h = await startHarness();
    const c = await h.raw();
    expect(await c.handshake({ minVersion: 2, maxVersion: 1, capabilityToken: CAPABILITY })).toMatchObject({ code: 'INVALID_REQUEST' });
    await c.closed;
    const d = await h.raw();
    expect(await d.handshake({ minVersion: 'one', maxVersion: 1, capabilityToken: CAPABILITY })).toMatchObject({ code: 'INVALID_REQUEST' });
    await d.closed;
  });

  it('answers INVALID_REQUEST and closes when the first frame is not a handshake, without touching a store', async () => {
    h = await startHarness();
    const c = await h.raw();
    c.send({ v: 1, id: 'x', op: 'get_token', payload: { provider: 'anthropic' } });
    expect(await c.frameAt(0)).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    await c.closed;
    const d = await h.raw();
    d.send({ v: 1, id: 'x', op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY } });
    expect(await d.frameAt(0)).toMatchObject({ ok: false, code: 'INVALID_REQUEST', error: 'the first frame must be a handshake without an id' });
    await d.closed;
    expect(h.tokens.calls).toBe(0);
  });

  it('closes a connection that does not complete the handshake in time, sending nothing', async () => {
    h = await startHarness({ timeouts: { handshakeMs: 150 } });
    const c = await h.raw();
    const t0 = Date.now();
    await c.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(120);
    expect(c.frames).toEqual([]);
  });

  it('works without a capability token when the server has none', async () => {
    h = await startHarness({ capabilityToken: undefined });
    const c = await h.raw();
    expect(await c.handshake()).toMatchObject({ ok: true });
  });

  it('handles a handshake and requests merged into one write', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v');
    const c = await h.raw();
    c.sendRaw(
      Buffer.concat([
        frameOf({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY } }),
        frameOf({ v: 1, id: 'a', op: 'get_api_key', payload: { name: 'k' } }),
        frameOf({ v: 1, id: 'b', op: 'list_api_keys' }),
      ]),
    );
    expect(await c.frameAt(0)).toMatchObject({ op: 'handshake', ok: true });
    expect(await c.answerFor('a')).toMatchObject({ ok: true, data: { key: 'v' } });
    expect(await c.answerFor('b')).toMatchObject({ ok: true, data: { keys: ['k'] } });
  });

  it('treats a second handshake as a request without an id', async () => {
    h = await startHarness();
    const c = await h.client();
    c.send({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY } });
    const r = await c.frameAt(1);
    expect(r).toEqual({ v: 1, ok: false, code: 'INVALID_REQUEST', error: 'request without a valid string id' });
    expect(c.isClosed).toBe(false);
  });
});
