import { describe, expect, it } from 'vitest';
import { systemTimers } from '../../src/refresh/clock.js';
import { RenewalScheduler, type RenewalOutcome, type RenewalSchedulerOptions } from '../../src/refresh/scheduler.js';
import { FakeClock } from './fake-clock.js';

const HOUR = 3600;

interface Harness {
  clock: FakeClock;
  scheduler: RenewalScheduler;
  /** Wall-clock times (ms) of each renew call, with the expiry it was asked to renew. */
  calls: Array<{ at: number; expectedExpiry: number }>;
  /** Decides each renew call's outcome. */
  next: (call: { at: number; expectedExpiry: number }) => Promise<RenewalOutcome> | RenewalOutcome;
}

function harness(options: Partial<RenewalSchedulerOptions> = {}, random = 0): Harness {
  const clock = new FakeClock();
  const h: Harness = {
    clock,
    calls: [],
    next: () => ({ kind: 'stop' }),
    scheduler: undefined as unknown as RenewalScheduler,
  };
  h.scheduler = new RenewalScheduler({
    clock,
    timers: clock,
    random: () => random,
    renew: async (_p, _b, expectedExpiry) => {
      const call = { at: clock.now(), expectedExpiry };
      h.calls.push(call);
      return h.next(call);
    },
    ...options,
  });
  return h;
}

const sec = (ms: number): number => Math.floor(ms / 1000);

describe('RenewalScheduler', () => {
  it('fires at expiry - lead - jitter for the token it was armed with', async () => {
    const h = harness({}, 0.5);
    const start = h.clock.now();
    const expiry = sec(start) + HOUR;
    h.scheduler.arm('p', 'b', { expiry });
    // lead 360 s, jitter 0.5 * 30 s
    const due = expiry * 1000 - 360_000 - 15_000;
    expect(h.scheduler.nextFireAt('p', 'b')).toBe(due);
    await h.clock.advance(due - start - 1);
    expect(h.calls).toEqual([]);
    await h.clock.advance(1);
    expect(h.calls).toEqual([{ at: due, expectedExpiry: expiry }]);
  });

  it('keeps the timer when armed again for the same token', async () => {
    const h = harness();
    const expiry = sec(h.clock.now()) + HOUR;
    h.scheduler.arm('p', 'b', { expiry });
    const first = h.scheduler.nextFireAt('p', 'b');
    await h.clock.advance(10 * 60_000);
    h.scheduler.arm('p', 'b', { expiry });
    expect(h.scheduler.nextFireAt('p', 'b')).toBe(first);
    expect(h.clock.pending()).toBe(1);
  });

  it('re-arms for the new expiry after a renewal', async () => {
    const h = harness();
    const expiry = sec(h.clock.now()) + HOUR;
    h.next = (call) => ({ kind: 'renewed', expiry: sec(call.at) + HOUR, obtainedAt: call.at });
    h.scheduler.arm('p', 'b', { expiry });
    await h.clock.advance(HOUR * 1000 * 2);
    expect(h.calls.length).toBe(2);
    // Second renewal 3600 - 360 s after the first.
    expect(h.calls[1]!.at - h.calls[0]!.at).toBe((HOUR - 360) * 1000);
  });

  it('never fires inside the cooldown, so a short-lived token cannot loop', async () => {
    const h = harness();
    const cooldown = 30_000;
    h.next = (call) => ({ kind: 'renewed', expiry: sec(call.at) + 20, obtainedAt: call.at, notBefore: call.at + cooldown });
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 20 }, { notBefore: h.clock.now() + cooldown });
    await h.clock.advance(5 * 60_000);
    expect(h.calls.length).toBe(10);
    for (let i = 1; i < h.calls.length; i++) expect(h.calls[i]!.at - h.calls[i - 1]!.at).toBeGreaterThanOrEqual(cooldown);
  });

  it('waits until a deferral ends without counting a failure', async () => {
    const h = harness();
    h.next = (call) => (h.calls.length === 1 ? { kind: 'deferred', until: call.at + 12_000 } : { kind: 'stop' });
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 600 });
    await h.clock.advance(600_000);
    expect(h.calls.length).toBe(2);
    expect(h.calls[1]!.at - h.calls[0]!.at).toBe(12_000);
    expect(h.scheduler.isArmed('p', 'b')).toBe(false);
  });

  it('refreshes at once after a suspend that slept past the due time', async () => {
    const h = harness();
    const expiry = sec(h.clock.now()) + HOUR;
    h.next = (call) => ({ kind: 'renewed', expiry: sec(call.at) + HOUR, obtainedAt: call.at });
    h.scheduler.arm('p', 'b', { expiry });
    await h.clock.advance(5 * 60_000);
    h.clock.suspend(3 * HOUR * 1000); // the token expired while the machine slept
    await h.clock.advance(60_000); // the next routine wake-up
    expect(h.calls.length).toBe(1);
    expect(h.calls[0]!.expectedExpiry).toBe(expiry);
    expect(h.calls[0]!.at).toBeGreaterThan(expiry * 1000);
  });

  it('re-arms without refreshing when someone else already renewed', async () => {
    const h = harness();
    const expiry = sec(h.clock.now()) + HOUR;
    const renewedElsewhere = expiry + HOUR;
    h.next = (call) => (call.expectedExpiry === expiry ? { kind: 'renewed', expiry: renewedElsewhere, obtainedAt: call.at } : { kind: 'stop' });
    h.scheduler.arm('p', 'b', { expiry });
    await h.clock.advance((HOUR - 300) * 1000);
    expect(h.calls.length).toBe(1);
    expect(h.scheduler.nextFireAt('p', 'b')).toBeGreaterThan(expiry * 1000);
  });

  it('backs off from 30 s doubling to 30 min and gives up after 10 straight failures', async () => {
    const h = harness();
    h.next = () => {
      throw new Error('provider unavailable');
    };
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 600 });
    await h.clock.advance(24 * HOUR * 1000);
    expect(h.calls.length).toBe(10);
    const gaps = h.calls.slice(1).map((c, i) => (c.at - h.calls[i]!.at) / 1000);
    expect(gaps).toEqual([30, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
    expect(h.scheduler.isArmed('p', 'b')).toBe(false);
    expect(h.clock.pending()).toBe(0);
  });

  it('starts counting failures again after a success', async () => {
    const h = harness({ maxFailures: 3 });
    let n = 0;
    h.next = (call) => {
      n++;
      if (n === 3) return { kind: 'renewed', expiry: sec(call.at) + 600, obtainedAt: call.at };
      throw new Error('down');
    };
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 600 });
    await h.clock.advance(HOUR * 1000);
    // fail, fail, success, fail, fail, fail -> gave up after the 3 failures following the success
    expect(h.calls.length).toBe(6);
    expect(h.scheduler.isArmed('p', 'b')).toBe(false);
  });

  it('stops when told there is nothing left to renew, and on cancel', async () => {
    const h = harness();
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 600 });
    h.scheduler.arm('p', 'other', { expiry: sec(h.clock.now()) + 600 });
    h.scheduler.cancel('p', 'other');
    await h.clock.advance(600_000);
    expect(h.calls.length).toBe(1);
    expect(h.scheduler.size).toBe(0);
    expect(h.clock.pending()).toBe(0);
  });

  it('stops every timer on close and ignores later arming', async () => {
    const h = harness();
    for (const b of ['a', 'b', 'c']) h.scheduler.arm('p', b, { expiry: sec(h.clock.now()) + HOUR });
    expect(h.clock.pending()).toBe(3);
    h.scheduler.close();
    expect(h.clock.pending()).toBe(0);
    h.scheduler.arm('p', 'd', { expiry: sec(h.clock.now()) + HOUR });
    await h.clock.advance(2 * HOUR * 1000);
    expect(h.calls).toEqual([]);
  });

  it('drops the outcome of a renewal that was running when close() came', async () => {
    const h = harness();
    let finish!: (o: RenewalOutcome) => void;
    h.next = () => new Promise<RenewalOutcome>((r) => (finish = r));
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 600 });
    await h.clock.advance(600_000);
    expect(h.calls.length).toBe(1);
    h.scheduler.close();
    finish({ kind: 'renewed', expiry: sec(h.clock.now()) + 600, obtainedAt: h.clock.now() });
    await h.clock.flush();
    expect(h.clock.pending()).toBe(0);
  });

  it('wakes at least once a minute, even for a token valid for a year', async () => {
    const h = harness();
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + 365 * 86_400 });
    expect(h.clock.pendingDelays()).toEqual([60_000]);
    await h.clock.advance(10 * 60_000);
    expect(h.calls).toEqual([]);
    expect(h.clock.pendingDelays()).toEqual([60_000]);
  });

  it('uses timers that never keep the process alive', () => {
    const renewal = systemTimers.setTimeout(() => undefined, 1000) as NodeJS.Timeout;
    const inFlight = systemTimers.setTimeout(() => undefined, 1000, { keepAlive: true }) as NodeJS.Timeout;
    expect(renewal.hasRef()).toBe(false);
    expect(inFlight.hasRef()).toBe(true);
    systemTimers.clearTimeout(renewal);
    systemTimers.clearTimeout(inFlight);
    const h = harness();
    h.scheduler.arm('p', 'b', { expiry: sec(h.clock.now()) + HOUR });
    expect(h.clock.pending({ keepAliveOnly: true })).toBe(0);
  });
});
