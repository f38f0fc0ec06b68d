import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { encodeFrame, FrameDecoder, FrameError, MAX_FRAME_PAYLOAD, parsePayload } from '../../src/protocol/frame.js';

function frameOf(payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length, 0);
  return Buffer.concat([header, payload]);
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

describe('encodeFrame', () => {
  it('writes a big-endian length then UTF-8 JSON', () => {
    const buf = encodeFrame({ a: 'é' });
    const json = '{"a":"é"}';
    expect(buf.readUInt32BE(0)).toBe(Buffer.byteLength(json));
    expect(buf.subarray(4).toString('utf8')).toBe(json);
  });

  it('refuses a message larger than the frame limit', () => {
    expect(() => encodeFrame({ s: 'x'.repeat(MAX_FRAME_PAYLOAD) })).toThrow(/frame limit/);
  });
});

describe('FrameDecoder', () => {
  it('decodes frames merged into one chunk', () => {
    const d = new FrameDecoder();
    const chunk = Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }), encodeFrame({ n: 3 })]);
    expect(d.push(chunk).map((p) => parsePayload(p))).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(d.hasPartialFrame).toBe(false);
  });

  it('decodes a frame delivered one byte at a time, reporting the partial frame', () => {
    const d = new FrameDecoder();
    const buf = encodeFrame({ hello: 'world' });
    const got: Buffer[] = [];
    for (let i = 0; i < buf.length; i++) {
      got.push(...d.push(buf.subarray(i, i + 1)));
      if (i < buf.length - 1) expect(d.hasPartialFrame).toBe(true);
    }
    expect(got.map((p) => parsePayload(p))).toEqual([{ hello: 'world' }]);
    expect(d.hasPartialFrame).toBe(false);
  });

  it('accepts exactly the maximum payload and rejects one byte more', () => {
    const max = Buffer.alloc(MAX_FRAME_PAYLOAD, 0x20);
    expect(new FrameDecoder().push(frameOf(max))[0]!.length).toBe(MAX_FRAME_PAYLOAD);
    const d = new FrameDecoder();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 0);
    expect(() => d.push(header)).toThrow(FrameError);
  });

  it('rejects a 4 GiB length from the header alone, before any payload arrives', () => {
    const d = new FrameDecoder();
    let err: unknown;
    try {
      d.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FrameError);
    expect((err as FrameError).reason).toBe('oversize');
  });

  it('handles empty frames and empty chunks', () => {
    const d = new FrameDecoder();
    expect(d.push(Buffer.alloc(0))).toEqual([]);
    const out = d.push(Buffer.from([0, 0, 0, 0]));
    expect(out).toHaveLength(1);
    expect(out[0]!.length).toBe(0);
  });

  it('returns the same payloads for any chunking of any frame sequence', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (payloads, cuts) => {
          const stream = Buffer.concat(payloads.map((p) => frameOf(Buffer.from(p))));
          const d = new FrameDecoder();
          const got: Buffer[] = [];
          for (const part of splitAt(stream, cuts)) got.push(...d.push(part));
          expect(got.map((b) => [...b])).toEqual(payloads.map((p) => [...p]));
          expect(d.hasPartialFrame).toBe(false);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('never throws anything but FrameError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), (chunks) => {
        const d = new FrameDecoder(1024);
        try {
          for (const c of chunks) for (const p of d.push(Buffer.from(c))) expect(p.length).toBeLessThanOrEqual(1024);
        } catch (e) {
          expect(e).toBeInstanceOf(FrameError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('parsePayload', () => {
  it('accepts objects, with newlines anywhere', () => {
    expect(parsePayload(Buffer.from('{\n"a":\n1}\n'))).toEqual({ a: 1 });
  });
  it.each([
    ['not json', 'not_json'],
    ['[1,2]', 'not_object'],
    ['null', 'not_object'],
    ['"str"', 'not_object'],
    ['42', 'not_object'],
  ])('rejects %s', (text, reason) => {
    let err: unknown;
    try {
      parsePayload(Buffer.from(text));
    } catch (e) {
      err = e;
    }
    expect((err as FrameError).reason).toBe(reason);
  });
});
