import { describe, expect, it } from 'vitest';
import { Deadlines } from '../../src/server/deadlines.js';

const never = (): Promise<never> => new Promise<never>(() => undefined);

describe('Deadlines', () => {
  it('passes through the work’s value or error and forgets it', async () => {
    const d = new Deadlines(10);
    await expect(d.bound(Promise.resolve(7), 1000, () => new Error('late'))).resolves.toBe(7);
    await expect(d.bound(Promise.reject(new Error('boom')), 1000, () => new Error('late'))).rejects.toThrow('boom');
    expect(d.size).toBe(0);
  });

  it('rejects work that outlives its bound, not before it, and each on its own deadline', async () => {
    const d = new Deadlines(5);
    const t0 = performance.now();
    const short = d.bound(never(), 40, () => new Error('short'));
    const long = d.bound(never(), 120, () => new Error('long'));
    await expect(short).rejects.toThrow('short');
    const shortAt = performance.now() - t0;
    expect(shortAt).toBeGreaterThanOrEqual(39);
    expect(d.size).toBe(1);
    await expect(long).rejects.toThrow('long');
    expect(performance.now() - t0).toBeGreaterThanOrEqual(119);
    expect(d.size).toBe(0);
  });

  it('a late result of timed-out work is dropped without an unhandled rejection', async () => {
    const d = new Deadlines(5);
    let fail!: (e: Error) => void;
    const work = new Promise<never>((_, reject) => (fail = reject));
    await expect(d.bound(work, 20, () => new Error('timed out'))).rejects.toThrow('timed out');
    fail(new Error('late'));
    await new Promise((r) => setTimeout(r, 20));
    expect(d.size).toBe(0);
  });

  it('uses a fake clock when given one', async () => {
    let now = 0;
    const d = new Deadlines(5, () => now);
    const p = d.bound(never(), 1_000_000, () => new Error('expired'));
    await new Promise((r) => setTimeout(r, 20));
    expect(d.size).toBe(1);
    now = 1_000_000;
    await expect(p).rejects.toThrow('expired');
  });
});
