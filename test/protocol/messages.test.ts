import { describe, expect, it } from 'vitest';
import { HandshakeSchema, OP_PAYLOADS, RequestEnvelopeSchema, TokenSchema, isOp } from '../../src/protocol/messages.js';

describe('message schemas', () => {
  it('knows exactly the operations of the spec', () => {
    expect(Object.keys(OP_PAYLOADS).sort()).toEqual(
      [
        'cancel', 'get_api_key', 'get_token', 'list_api_keys', 'list_buckets', 'list_providers', 'oauth_cancel',
        'oauth_exchange', 'oauth_initiate', 'oauth_poll', 'refresh_token', 'remove_token', 'save_token',
        'get_bucket_stats', 'has_api_key',
      ].sort(),
    );
    expect(isOp('get_token')).toBe(true);
    expect(isOp('toString')).toBe(false);
    expect(isOp('__proto__')).toBe(false);
  });

  it('validates names against the spec patterns', () => {
    const p = OP_PAYLOADS.get_token;
    expect(p.safeParse({ provider: 'anthropic' }).success).toBe(true);
    expect(p.safeParse({ provider: 'a@b.c-d_e', bucket: 'work' }).success).toBe(true);
    expect(p.safeParse({ provider: 'a/b' }).success).toBe(false);
    expect(p.safeParse({ provider: 'a'.repeat(65) }).success).toBe(false);
    expect(p.safeParse({ provider: '' }).success).toBe(false);
    expect(p.safeParse({ provider: 'x', bucket: null }).success).toBe(false);
    expect(OP_PAYLOADS.get_api_key.safeParse({ name: 'openai' }).success).toBe(true);
    expect(OP_PAYLOADS.get_api_key.safeParse({ name: 'a@b' }).success).toBe(false);
  });

  it('ignores unknown fields and treats null as a wrong type', () => {
    expect(OP_PAYLOADS.list_buckets.safeParse({ provider: 'x', extra: 1 }).success).toBe(true);
    expect(OP_PAYLOADS.list_buckets.safeParse({ provider: null }).success).toBe(false);
    expect(RequestEnvelopeSchema.safeParse({ v: 1, id: 'a', op: 'get_token', payload: null }).success).toBe(false);
    expect(RequestEnvelopeSchema.safeParse({ v: 1, id: 'a', op: 'get_token', extra: true }).success).toBe(true);
  });

  it('drops refresh_token from an incoming save_token payload and keeps extra fields', () => {
    const r = OP_PAYLOADS.save_token.parse({
      provider: 'p',
      token: { access_token: 'at', expiry: 10, refresh_token: 'forged', id_token: 'idt' },
    });
    expect(r.token).toEqual({ access_token: 'at', expiry: 10, id_token: 'idt' });
    expect('refresh_token' in r.token).toBe(false);
  });

  it('requires access_token and a finite expiry on tokens', () => {
    expect(TokenSchema.safeParse({ access_token: 'a', expiry: 1 }).success).toBe(true);
    expect(TokenSchema.safeParse({ expiry: 1 }).success).toBe(false);
    expect(TokenSchema.safeParse({ access_token: 'a', expiry: '1' }).success).toBe(false);
    expect(TokenSchema.safeParse({ access_token: 'a', expiry: -1 }).success).toBe(false);
  });

  it('parses a handshake', () => {
    expect(HandshakeSchema.safeParse({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 2 } }).success).toBe(true);
    expect(HandshakeSchema.safeParse({ v: 1, op: 'handshake', payload: { minVersion: 1.5, maxVersion: 2 } }).success).toBe(false);
  });
});
