import { describe, expect, it } from 'vitest';
import { PollGate } from '../../src/login/poll-gate.js';

describe('PollGate', () => {
  it('spaces polls of one provider by the interval in total, however many sessions ask; other providers are independent', async () => {
    const gate = new PollGate();
    const stop = new AbortController().signal;
    const started = Date.now();
    const done: Array<[string, number]> = [];
    await Promise.all([
      ...[0, 1, 2, 3].map(async (i) => {
        await gate.wait('dev', 150, stop);
        done.push([`dev${i}`, Date.now() - started]);
      }),
      (async () => {
        await gate.wait('other', 150, stop);
        done.push(['other', Date.now() - started]);
      })(),
    ]);
    const dev = done.filter(([n]) => n.startsWith('dev')).map(([, ms]) => ms).sort((a, b) => a - b);
    // Four sessions: the k-th poll waits at least k intervals (lower bounds only: a loaded machine is slower, never faster).
    dev.forEach((ms, k) => expect(ms).toBeGreaterThanOrEqual(k * 150 - 5));
    expect(done.find(([n]) => n === 'other')![1]).toBeLessThan(dev[3]!);
  });

  it('a stopped session stops waiting', async () => {
    const gate = new PollGate();
    const stop = new AbortController();
    await gate.wait('dev', 10_000, stop.signal);
    const waiting = gate.wait('dev', 10_000, stop.signal);
    stop.abort();
    await expect(waiting).rejects.toBeDefined();
  });
});
