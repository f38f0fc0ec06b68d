import { expect } from 'vitest';
import { HandshakeSchema, isOp, OP_PAYLOADS, RequestEnvelopeSchema } from '../../src/protocol/messages.js';
import type { FakeProxy } from '../support/fake-proxy.js';

/**
 * Every frame a client sent to `proxy` must be what the real server accepts:
 * a handshake first on each connection, then request envelopes whose payload
 * validates against its op's schema, with ids unique per connection.
 */
export function expectValidClientFrames(proxy: FakeProxy): void {
  for (const conn of proxy.connections) {
    const [first, ...rest] = conn.frames;
    if (first === undefined) continue;
    expect(HandshakeSchema.safeParse(first).success, JSON.stringify(first)).toBe(true);
    const ids = new Set<string>();
    for (const frame of rest) {
      const env = RequestEnvelopeSchema.safeParse(frame);
      expect(env.success, JSON.stringify(frame)).toBe(true);
      if (!env.success) continue;
      expect(isOp(env.data.op), env.data.op).toBe(true);
      if (!isOp(env.data.op)) continue;
      expect(OP_PAYLOADS[env.data.op].safeParse(env.data.payload ?? {}).success, JSON.stringify(frame)).toBe(true);
      expect(ids.has(env.data.id), `duplicate id ${env.data.id}`).toBe(false);
      ids.add(env.data.id);
    }
  }
}
