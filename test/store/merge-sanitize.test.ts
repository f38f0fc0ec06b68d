import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mergeToken } from '../../src/store/merge.js';
import { sanitizeToken } from '../../src/store/sanitize.js';
import type { OAuthToken } from '../../src/store/types.js';

const extraKey = fc.string({ minLength: 1, maxLength: 8 }).filter((k) => !['access_token', 'expiry', 'refresh_token', '__proto__'].includes(k));
const token = fc.record(
  {
    access_token: fc.string({ minLength: 1 }),
    expiry: fc.nat(),
    refresh_token: fc.oneof(fc.string(), fc.constant('')),
    scope: fc.string(),
    extra: fc.dictionary(extraKey, fc.jsonValue(), { maxKeys: 4 }),
  },
  { requiredKeys: ['access_token', 'expiry'] },
).map(({ extra, ...t }) => ({ ...extra, ...t }) as OAuthToken);

describe('mergeToken', () => {
  it('new access_token and expiry always win; refresh_token only when non-empty; other fields new-else-stored', () => {
    fc.assert(
      fc.property(token, token, (stored, incoming) => {
        const m = mergeToken(stored, incoming);
        expect(m.access_token).toBe(incoming.access_token);
        expect(m.expiry).toBe(incoming.expiry);
        const rt = incoming.refresh_token ? incoming.refresh_token : stored.refresh_token;
        expect(m.refresh_token).toBe(rt);
        for (const k of new Set([...Object.keys(stored), ...Object.keys(incoming)])) {
          if (k === 'access_token' || k === 'expiry' || k === 'refresh_token') continue;
          const own = (o: OAuthToken): unknown => (Object.hasOwn(o, k) ? o[k] : undefined);
          expect(own(m)).toEqual(own(incoming) !== undefined ? own(incoming) : own(stored));
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('keeps the stored refresh token when the refresh answer has none', () => {
    expect(mergeToken({ access_token: 'a', expiry: 1, refresh_token: 'keep', id_token: 'i' }, { access_token: 'b', expiry: 2 })).toEqual({
      access_token: 'b',
      expiry: 2,
      refresh_token: 'keep',
      id_token: 'i',
    });
    expect(mergeToken(null, { access_token: 'b', expiry: 2, refresh_token: '' })).toEqual({ access_token: 'b', expiry: 2 });
  });
});

describe('sanitizeToken', () => {
  it('drops exactly refresh_token and keeps everything else', () => {
    fc.assert(
      fc.property(token, (t) => {
        const s = sanitizeToken(t);
        expect('refresh_token' in s).toBe(false);
        const { refresh_token: _r, ...rest } = t;
        expect(s).toEqual(rest);
        expect(t.refresh_token === undefined || 'refresh_token' in t).toBe(true); // input untouched
      }),
      { numRuns: 1000 },
    );
  });
});
