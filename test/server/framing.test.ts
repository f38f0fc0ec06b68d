import { afterEach, describe, expect, it } from 'vitest';
import { MAX_FRAME_PAYLOAD } from '../../src/protocol/frame.js';
import { frameOf, rawFrame } from '../support/raw-client.js';
import { startHarness, until, type Harness } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

/** A request frame padded with an ignored field to exactly `size` payload bytes. */
function paddedRequest(id: string, size: number): Buffer {
  const base = { v: 1, id, op: 'list_api_keys', pad: '' };
  const overhead = Buffer.byteLength(JSON.stringify(base));
  return frameOf({ ...base, pad: 'x'.repeat(size - overhead) });
}

describe('framing', () => {
  it('closes on an oversized header alone, before any payload byte arrives', async () => {
    h = await startHarness();
    const c = await h.client();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(0xffffffff, 0);
    const t0 = Date.now();
    c.sendRaw(header);
    await c.closed;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(c.frames).toHaveLength(1); // only the handshake answer
  });

  it('accepts a payload of exactly the limit and closes on one byte more', async () => {
    h = await startHarness();
    const c = await h.client();
    const ok = paddedRequest('max', MAX_FRAME_PAYLOAD);
    expect(ok.length).toBe(MAX_FRAME_PAYLOAD + 4);
    c.sendRaw(ok);
    expect(await c.answerFor('max')).toMatchObject({ ok: true });
    c.sendRaw(paddedRequest('over', MAX_FRAME_PAYLOAD + 1));
    await c.closed;
    expect(c.frames.some((f) => f.id === 'over')).toBe(false);
  });

  for (const [name, payload] of [
    ['non-JSON', 'this is {not json'],
    ['a JSON array', '[{"v":1,"id":"a","op":"list_api_keys"}]'],
    ['a JSON string', '"hello"'],
    ['JSON null', 'null'],
  ] as const) {
    it(`closes on ${name} without answering`, async () => {
      h = await startHarness();
      const c = await h.client();
      c.sendRaw(rawFrame(payload));
      await c.closed;
      expect(c.frames).toHaveLength(1);
    });
  }

  it('closes on garbage before the handshake too', async () => {
    h = await startHarness();
    const c = await h.raw();
    c.sendRaw(rawFrame('garbage'));
    await c.closed;
    expect(c.frames).toEqual([]);
  });

  it('ignores newlines inside payloads', async () => {
    h = await startHarness();
    const c = await h.client();
    c.sendRaw(rawFrame('{\n"v": 1,\n"id": "nl",\n"op": "list_api_keys"\n}\n'));
    expect(await c.answerFor('nl')).toMatchObject({ ok: true });
  });

  it('reassembles a frame split into single bytes', async () => {
    h = await startHarness();
    const c = await h.client();
    const f = frameOf({ v: 1, id: 'split', op: 'list_providers' });
    for (let i = 0; i < f.length; i++) {
      c.sendRaw(f.subarray(i, i + 1));
      if (i % 8 === 0) await sleep(1);
    }
    expect(await c.answerFor('split')).toMatchObject({ ok: true, data: { providers: [] } });
  });

  it('answers every frame of a chunk holding several frames and a partial one', async () => {
    h = await startHarness();
    const c = await h.client();
    const frames = Buffer.concat(['m1', 'm2', 'm3', 'm4'].map((id) => frameOf({ v: 1, id, op: 'list_api_keys' })));
    const cut = frames.length - 5;
    c.sendRaw(frames.subarray(0, cut));
    await c.answerFor('m3');
    expect(c.frames.some((f) => f.id === 'm4')).toBe(false);
    c.sendRaw(frames.subarray(cut));
    expect(await c.answerFor('m4')).toMatchObject({ ok: true });
  });

  it('closes a partial frame after the frame timeout, counted from its first byte', async () => {
    h = await startHarness({ timeouts: { frameMs: 300 } });
    const c = await h.client();
    const f = frameOf({ v: 1, id: 'slow', op: 'list_api_keys' });
    const t0 = Date.now();
    // Trickle: every piece arrives well within the timeout of the previous one,
    // but the frame as a whole takes longer.
    for (let i = 0; i < 5; i++) {
      c.sendRaw(f.subarray(i, i + 1));
      await sleep(100);
      if (c.isClosed) break;
    }
    await c.closed;
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeGreaterThanOrEqual(280);
    expect(elapsed).toBeLessThan(1500);
    expect(c.frames.some((f2) => f2.id === 'slow')).toBe(false);
  });

  it('times a partial header too', async () => {
    h = await startHarness({ timeouts: { frameMs: 150 } });
    const c = await h.client();
    c.sendRaw(Buffer.from([0, 0]));
    await c.closed;
  });

  it('restarts the frame timer for each new frame', async () => {
    h = await startHarness({ timeouts: { frameMs: 250 } });
    const c = await h.client();
    // Each frame completes within the timeout; together they take much longer.
    for (let i = 0; i < 4; i++) {
      const f = frameOf({ v: 1, id: `t${i}`, op: 'list_api_keys' });
      c.sendRaw(f.subarray(0, 6));
      await sleep(120);
      c.sendRaw(f.subarray(6));
      await c.answerFor(`t${i}`);
    }
    expect(c.isClosed).toBe(false);
  });

  it('uses the realistic 5 s partial-frame timeout by default', async () => {
    h = await startHarness();
    const c = await h.client();
    c.sendRaw(frameOf({ v: 1, id: 'x', op: 'list_api_keys' }).subarray(0, 10));
    await sleep(4500);
    expect(c.isClosed).toBe(false);
    await c.closed;
  }, 10_000);

  it("one connection's garbage does not disturb another connection's work", async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'value-k');
    h.keys.gate.hold('k');
    const good = await h.client();
    good.fire('get_api_key', { name: 'k' }, 'held');
    await until(() => h!.keys.gate.entered('k') === 1);
    const bad = await h.client();
    bad.sendRaw(rawFrame('}{ not json'));
    await bad.closed;
    const worse = await h.client();
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(MAX_FRAME_PAYLOAD * 100, 0);
    worse.sendRaw(huge);
    await worse.closed;
    h.keys.gate.release('k');
    expect(await good.answerFor('held')).toMatchObject({ ok: true, data: { key: 'value-k' } });
    expect(await good.request('list_api_keys')).toMatchObject({ ok: true });
  });
});
