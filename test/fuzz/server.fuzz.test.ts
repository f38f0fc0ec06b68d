import { connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WIRE_ERROR_CODES } from '../../src/errors.js';
import { encodeFrame, FrameDecoder, parsePayload } from '../../src/protocol/frame.js';
import { OPS } from '../../src/protocol/messages.js';
import { Policy } from '../../src/server/policy.js';
import { ProxyServer } from '../../src/server/server.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { SimpleCredentials } from '../support/simple-credentials.js';
import { tempDir } from '../server/helpers.js';

const CAP = 'f'.repeat(64);
const CANARY = 'fuzz-canary-refresh-token-9d2e';
const wire = new Set<string>(WIRE_ERROR_CODES);

/** A pipelining client that matches answers by id in O(1) (the fuzz sends ~100k requests). */
class FuzzClient {
  private readonly decoder = new FrameDecoder(1 << 20);
  private readonly waiters = new Map<string, (f: Record<string, unknown>) => void>();
  private readonly failers = new Map<string, (e: Error) => void>();
  readonly unmatched: Array<Record<string, unknown>> = [];
  received = 0;
  closed = false;
  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (chunk.includes(CANARY)) throw new Error('the canary refresh token crossed the socket');
      for (const p of this.decoder.push(chunk)) {
        const f = parsePayload(p);
        const w = typeof f.id === 'string' ? this.waiters.get(f.id) : undefined;
        if (w) {
          this.waiters.delete(f.id as string);
          this.failers.delete(f.id as string);
          w(f);
        } else this.unmatched.push(f);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      for (const [id, fail] of this.failers) fail(new Error(`closed before answering ${id}`));
    });
    socket.on('error', () => undefined);
  }
  static open(path: string): Promise<FuzzClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new FuzzClient(s)));
      s.once('error', reject);
    });
  }
  send(message: object): void {
    this.socket.write(encodeFrame(message, 1 << 20));
  }
  answer(id: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.waiters.set(id, resolve);
      this.failers.set(id, reject);
    });
  }
  async handshake(): Promise<void> {
    this.send({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: CAP } });
    await new Promise<void>((r) => {
      const t = setInterval(() => {
        if (this.unmatched.length > 0) {
          clearInterval(t);
          r();
        }
      }, 1);
    });
    expect(this.unmatched.shift()).toMatchObject({ ok: true });
  }
}

describe('fuzzing the server with generated input', () => {
  let server: ProxyServer;
  const tokens = new MemoryTokenStore();
  const keys = new MemoryKeyStore();

  beforeAll(async () => {
    await tokens.saveToken('acme', { access_token: 'at', expiry: 4102444800, refresh_token: CANARY });
    await keys.saveKey('openai', 'sk-fuzz');
    server = new ProxyServer({
      tokens,
      keys,
      credentials: new SimpleCredentials(tokens),
      policy: Policy.from({ allow: ['acme:*'], keys: ['openai'], allowAll: false, readOnly: false }),
      capabilityToken: CAP,
      socketDir: tempDir(),
      peerCheck: 'off',
      // Raised for the fuzz run only, through the documented option.
      limits: { requestsPerWindow: 1_000_000 },
      timeouts: { frameMs: 2000, handshakeMs: 2000 },
    });
    await server.start();
  });
  afterAll(async () => {
    await server?.stop();
  });

  /** A well-behaved client on its own connection must be served throughout. */
  async function wellBehavedStillServed(): Promise<void> {
    const c = await FuzzClient.open(server.socketPath);
    await c.handshake();
    c.send({ v: 1, id: 'ok', op: 'get_api_key', payload: { name: 'openai' } });
    expect(await c.answer('ok')).toMatchObject({ ok: true, data: { key: 'sk-fuzz' } });
    c.socket.destroy();
  }

  it('answers ~95,000 arbitrary payloads for every op with a valid result, never crashing', async () => {
    const payload = fc.oneof(
      fc.dictionary(fc.constantFrom('provider', 'bucket', 'name', 'token', 'session_id', 'code', 'targetId', 'x'), fc.jsonValue(), { maxKeys: 4 }),
      fc.record({ provider: fc.constantFrom('acme', 'other', '', 'a/b', 'x'.repeat(70)), bucket: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }) }, { requiredKeys: [] }),
      fc.record({ provider: fc.constant('acme'), token: fc.record({ access_token: fc.string(), expiry: fc.oneof(fc.double(), fc.integer()), refresh_token: fc.constant('forged') }, { requiredKeys: [] }) }),
    );
    const request = fc.record({ op: fc.oneof(fc.constantFrom(...OPS), fc.string({ maxLength: 12 })), payload: fc.option(payload, { nil: undefined }) });
    const inputs = fc.sample(request, { numRuns: 95_000, seed: 20261128 });
    const c = await FuzzClient.open(server.socketPath);
    await c.handshake();
    let ok = 0;
    let refused = 0;
    const window = 12; // below the in-flight cap of 16
    for (let i = 0; i < inputs.length; i += window) {
      const batch = inputs.slice(i, i + window).map((input, j) => {
        const id = `f${i + j}`;
        c.send(input.payload === undefined ? { v: 1, id, op: input.op } : { v: 1, id, op: input.op, payload: input.payload });
        return c.answer(id);
      });
      for (const a of await Promise.all(batch)) {
        if (a.ok === true) ok++;
        else {
          refused++;
          expect(wire.has(String(a.code))).toBe(true);
          expect(typeof a.error).toBe('string');
        }
      }
    }
    expect(ok + refused).toBe(inputs.length);
    expect(ok).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
    expect(c.closed).toBe(false);
    // remove_token may have dropped the entry, but a forged refresh token is never stored.
    expect([undefined, CANARY]).toContain((await tokens.getToken('acme'))?.refresh_token);
    c.socket.destroy();
    await wellBehavedStillServed();
  }, 120_000);

  it('survives arbitrary byte streams and chunkings: each connection answers validly or closes', async () => {
    const stream = fc.array(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.constant(new Uint8Array([0, 0, 0, 2, 0x7b, 0x7d]))), { maxLength: 6 });
    const streams = fc.sample(stream, { numRuns: 600, seed: 7 });
    for (const chunks of streams) {
      const c = await FuzzClient.open(server.socketPath);
      for (const chunk of chunks) c.socket.write(Buffer.from(chunk));
      await new Promise((r) => setTimeout(r, 1));
      for (const f of c.unmatched) {
        expect(f.v).toBe(1);
        if (f.ok === false) expect(wire.has(String(f.code))).toBe(true);
      }
      c.socket.destroy();
    }
    await wellBehavedStillServed();
  }, 120_000);
});
