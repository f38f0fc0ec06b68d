import { afterEach, describe, expect, it } from 'vitest';
import { MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD_V2 } from '../../src/protocol/frame.js';
import { frameOf, RawClient } from '../support/raw-client.js';
import { CAPABILITY, startHarness, until, type Harness, type HarnessOptions } from './helpers.js';

const MiB = 1024 * 1024;
const FAR = 2_000_000_000;

let h: Harness | null = null;
const extra: RawClient[] = [];
afterEach(async () => {
  for (const c of extra.splice(0)) c.close();
  await h?.close();
  h = null;
});

async function v2Client(harness: Harness): Promise<RawClient> {
  const c = await harness.raw();
  expect(await c.handshake({ minVersion: 1, maxVersion: 2, capabilityToken: CAPABILITY })).toMatchObject({ ok: true, data: { version: 2 } });
  c.v = 2;
  return c;
}

/** A request frame padded with an ignored field to exactly `size` payload bytes. */
function paddedRequest(v: number, id: string, size: number): Buffer {
  const base = { v, id, op: 'list_api_keys', pad: '' };
  const overhead = Buffer.byteLength(JSON.stringify(base));
  return frameOf({ ...base, pad: 'x'.repeat(size - overhead) });
}

async function start(options: HarnessOptions = {}): Promise<Harness> {
  h = await startHarness(options);
  return h;
}

describe('protocol version 2', () => {
  it('carries a 1 MiB save_token and its 1 MiB get_token answer; the connection stays up', async () => {
    const harness = await start();
    const c = await v2Client(harness);
    const idToken = 'j'.repeat(MiB);
    const saved = await c.request('save_token', { provider: 'anthropic', bucket: 'big', token: { access_token: 'at-big', expiry: FAR, id_token: idToken } }, 'save', 10_000);
    expect(saved).toEqual({ v: 2, id: 'save', ok: true, data: {} });
    const got = await c.request('get_token', { provider: 'anthropic', bucket: 'big' }, 'get', 10_000);
    expect(got).toMatchObject({ v: 2, ok: true, data: { access_token: 'at-big', id_token: idToken } });
    expect(await c.request('list_providers')).toMatchObject({ ok: true, data: { providers: ['anthropic'] } });
    expect(c.isClosed).toBe(false);
    // Everything reserved for the large frames came back.
    await until(() => harness.server.bufferedLargeBytes === 0, 5000, 'large-frame budget returned');
  });

  it('accepts a payload of exactly 4 MiB and closes on one byte more', async () => {
    const harness = await start();
    const c = await v2Client(harness);
    c.sendRaw(paddedRequest(2, 'max', MAX_FRAME_PAYLOAD_V2));
    expect(await c.answerFor('max', 10_000)).toMatchObject({ ok: true });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_PAYLOAD_V2 + 1, 0);
    c.sendRaw(header);
    await c.closed;
  });

  it('keeps a version-1 client at 64 KiB both ways', async () => {
    const harness = await start();
    await harness.tokens.inner.saveToken('anthropic', { access_token: 'at', expiry: FAR, id_token: 'j'.repeat(100_000) });
    const c = await harness.client();
    // The stored token no longer fits a version-1 frame: the answer says so instead of breaking the stream.
    expect(await c.request('get_token', { provider: 'anthropic' })).toMatchObject({ v: 1, ok: false, code: 'INTERNAL_ERROR' });
    c.sendRaw(paddedRequest(1, 'over', MAX_FRAME_PAYLOAD + 1));
    await c.closed;
    expect(c.frames.some((f) => f.id === 'over')).toBe(false);
  });

  it('applies the agreed limit to a large frame sent right behind the handshake, in the same write', async () => {
    const harness = await start();
    const c = await harness.raw();
    c.sendRaw(Buffer.concat([frameOf({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 2, capabilityToken: CAPABILITY } }), paddedRequest(2, 'big', 2 * MiB)]));
    expect(await c.answerFor('big', 10_000)).toMatchObject({ v: 2, ok: true });
  });
});

describe('buffered-bytes bounds (hostile clients)', () => {
  it('many connections each trickling a 4 MiB frame: only the server budget is ever buffered, others are cut off, real clients keep working', async () => {
    const perServer = 8 * MiB;
    const harness = await start({ bufferBytes: { perServer, perConnection: 6 * MiB }, maxConnections: 256 });
    await harness.tokens.inner.saveToken('anthropic', { access_token: 'at-ok', expiry: FAR });
    const attackers: RawClient[] = [];
    for (let i = 0; i < 40; i++) attackers.push(await v2Client(harness));
    extra.push(...attackers);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_PAYLOAD_V2, 0);
    const slice = Buffer.alloc(64 * 1024, 0x20);
    let peak = 0;
    for (const a of attackers) a.sendRaw(header);
    // Trickle: a little at a time, never completing a frame.
    for (let round = 0; round < 8; round++) {
      for (const a of attackers) if (!a.isClosed) a.sendRaw(slice);
      await new Promise((r) => setTimeout(r, 20));
      peak = Math.max(peak, harness.server.bufferedLargeBytes);
    }
    await until(() => attackers.filter((a) => a.isClosed).length >= 38, 5000, 'over-budget connections closed');
    expect(attackers.filter((a) => !a.isClosed).length).toBe(2); // 8 MiB / 4 MiB
    expect(peak).toBeLessThanOrEqual(perServer);
    expect(harness.server.bufferedLargeBytes).toBeLessThanOrEqual(perServer);
    // A real client is still served at once, on v1 and v2.
    const good = await harness.client();
    expect(await good.request('get_token', { provider: 'anthropic' })).toMatchObject({ ok: true, data: { access_token: 'at-ok' } });
    const good2 = await v2Client(harness);
    expect(await good2.request('get_token', { provider: 'anthropic' })).toMatchObject({ ok: true });
    // Once the trickling connections are gone, their budget is back and a large frame fits again.
    for (const a of attackers) a.close();
    await until(() => harness.server.bufferedLargeBytes === 0, 5000, 'budget returned');
    good2.sendRaw(paddedRequest(2, 'big', 3 * MiB));
    expect(await good2.answerFor('big', 10_000)).toMatchObject({ ok: true });
  });

  it('a partial large frame still times out after 5 s, and its budget comes back', async () => {
    const harness = await start({ timeouts: { frameMs: 300 } });
    const c = await v2Client(harness);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(2 * MiB, 0);
    c.sendRaw(Buffer.concat([header, Buffer.alloc(1000, 0x20)]));
    await until(() => harness.server.bufferedLargeBytes === 2 * MiB, 3000, 'reservation');
    await c.closed;
    await until(() => harness.server.bufferedLargeBytes === 0, 3000, 'budget returned');
  });

  it('one connection cannot hold more than its own share: large frames queued behind held work close it', async () => {
    const harness = await start({ bufferBytes: { perServer: 64 * MiB, perConnection: 5 * MiB } });
    harness.tokens.gate.hold('anthropic');
    const c = await v2Client(harness);
    const big = (id: string): Buffer =>
      frameOf({ v: 2, id, op: 'save_token', payload: { provider: 'anthropic', token: { access_token: 'x', expiry: FAR, id_token: 'j'.repeat(2 * MiB) } } });
    c.sendRaw(big('a'));
    c.sendRaw(big('b'));
    await until(() => harness.tokens.gate.entered('anthropic') >= 1, 5000, 'first saves held');
    c.sendRaw(big('c'));
    await c.closed;
    harness.tokens.gate.release('anthropic');
    await until(() => harness.server.bufferedLargeBytes === 0, 5000, 'budget returned after the held work ended');
  });
});
