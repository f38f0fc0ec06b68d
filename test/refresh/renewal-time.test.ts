import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { maxJitterMs, renewalFireAt, renewalLeadSeconds } from '../../src/refresh/renewal-time.js';

describe('renewal timing (SPEC §5)', () => {
  it('computes lead = min(max(300, floor(0.1 * lifetime)), floor(lifetime / 2))', () => {
    expect(renewalLeadSeconds(3600)).toBe(360); // one hour: 10 %
    expect(renewalLeadSeconds(1800)).toBe(300); // 10 % would be 180: at least 300
    expect(renewalLeadSeconds(400)).toBe(200); // never more than half the lifetime
    expect(renewalLeadSeconds(20)).toBe(10);
    expect(renewalLeadSeconds(86_400)).toBe(8640);
    expect(renewalLeadSeconds(0)).toBe(0);
    expect(renewalLeadSeconds(-5)).toBe(0);
  });

  it('caps jitter at 30 s and at a tenth of the lifetime', () => {
    expect(maxJitterMs(3600)).toBe(30_000);
    expect(maxJitterMs(200)).toBe(20_000);
    expect(maxJitterMs(20)).toBe(2_000);
  });

  it('fires at expiry - lead - jitter with jitter inside its bounds', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 400 * 86_400 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (lifetime, random) => {
        const obtainedAt = 1_900_000_000_000;
        const expiry = obtainedAt / 1000 + lifetime;
        const fireAt = renewalFireAt(expiry, obtainedAt, random);
        const latest = expiry * 1000 - renewalLeadSeconds(lifetime) * 1000;
        expect(fireAt).toBeLessThanOrEqual(latest);
        expect(latest - fireAt).toBeLessThanOrEqual(Math.min(30_000, lifetime * 100));
        // Always after the token was obtained: a timer never fires before there is anything to renew.
        expect(fireAt).toBeGreaterThanOrEqual(obtainedAt);
      }),
    );
  });

  it('uses the extremes of the jitter range', () => {
    const obtainedAt = 1_900_000_000_000;
    const expiry = obtainedAt / 1000 + 3600;
    expect(renewalFireAt(expiry, obtainedAt, 0)).toBe(expiry * 1000 - 360_000);
    expect(expiry * 1000 - 360_000 - renewalFireAt(expiry, obtainedAt, 0.9999999)).toBeGreaterThan(29_900);
  });
});
