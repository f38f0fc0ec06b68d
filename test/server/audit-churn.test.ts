import { afterEach, describe, expect, it } from 'vitest';
import { RawClient } from '../support/raw-client.js';
import { CAPABILITY, startHarness, type Harness } from './helpers.js';

/**
 * A sandbox that opens connection after connection, each with a handshake
 * and one refused request, must not write an audit line per connection:
 * per-connection aggregation alone let one sandbox write thousands of lines
 * a second and rotate the real record away.
 */
let h: Harness;
afterEach(async () => {
  await h?.close();
});

type Line = Record<string, unknown>;

const sum = (m: unknown): number => Object.values((m ?? {}) as Record<string, number>).reduce((a, b) => a + b, 0);

describe('audit under connection churn', () => {
  it('handshakes and refusals of many short connections cost a bounded number of lines, and every one is counted', async () => {
    h = await startHarness({ policy: { allowAll: false, allow: ['p'] } });
    const legit = await h.client();
    expect(await legit.request('get_token', { provider: 'p' }, 'legit-1')).toMatchObject({ ok: false, code: 'NOT_FOUND' });

    const started = Date.now();
    let connections = 0;
    let refused = 0;
    while (connections < 1500) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => RawClient.connect(h.server.socketPath)));
      await Promise.all(
        batch.map(async (c) => {
          expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY })).toMatchObject({ ok: true });
          // Outside the policy, or past the peer's rate limit: refused either way.
          expect(await c.request('get_token', { provider: 'other' }, 'x')).toMatchObject({ ok: false });
          c.close();
        }),
      );
      connections += batch.length;
      refused += batch.length;
    }
    const seconds = Math.ceil((Date.now() - started) / 1000) + 2;
    await h.server.stop();
    const lines: Line[] = await h.auditLines();
    const churn = lines.filter((l) => l.conn !== 1);

    // A handful of lines per second, not one or two per connection.
    expect(churn.length).toBeLessThan(40 * seconds);
    // Nothing counted is lost: every handshake and every refusal is on record, one by one or in a count.
    const handshakes = churn.filter((l) => l.op === 'handshake' && l.result === 'OK').length
      + churn.filter((l) => l.op === 'aggregated').reduce((n, l) => n + ((l.counts as Record<string, number>)['handshake:OK'] ?? 0), 0);
    expect(handshakes).toBe(connections);
    const refusedCounted = churn.filter((l) => l.op === 'refused').reduce((n, l) => n + sum(l.refused), 0);
    expect(refusedCounted).toBe(refused);
    // The served request of the quiet client still has its own line, as does its handshake.
    expect(lines).toContainEqual(expect.objectContaining({ conn: 1, op: 'handshake', result: 'OK' }));
    expect(lines).toContainEqual(expect.objectContaining({ conn: 1, op: 'get_token', result: 'NOT_FOUND' }));
  }, 30_000);
});
