import type { Clock, TimerHandle, Timers } from '../../src/refresh/clock.js';

interface FakeTimer {
  id: number;
  at: number;
  fn: () => void;
  keepAlive: boolean;
}

/**
 * A wall clock plus timers on a separate monotonic timeline, like the real
 * thing: advance() moves both; suspend() moves only the wall clock (timers
 * do not run while a machine sleeps).
 */
export class FakeClock implements Clock, Timers {
  private wall: number;
  private mono = 0;
  private nextId = 1;
  private timers: FakeTimer[] = [];

  constructor(startMs = Date.UTC(2030, 0, 1)) {
    this.wall = startMs;
  }

  now(): number {
    return this.wall;
  }

  setTimeout(fn: () => void, ms: number, options?: { keepAlive?: boolean }): TimerHandle {
    const timer = { id: this.nextId++, at: this.mono + Math.max(0, ms), fn, keepAlive: options?.keepAlive === true };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Pending timers (optionally only those that would keep a process alive). */
  pending(options: { keepAliveOnly?: boolean } = {}): number {
    return this.timers.filter((t) => !options.keepAliveOnly || t.keepAlive).length;
  }

  /** Delays of the pending timers from now, ascending. */
  pendingDelays(): number[] {
    return this.timers.map((t) => t.at - this.mono).sort((a, b) => a - b);
  }

  /** Let promise chains and immediate callbacks settle. */
  async flush(rounds = 20): Promise<void> {
    for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
  }

  /** Move time forward by `ms`, running every timer that comes due, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.mono + ms;
    await this.flush();
    for (;;) {
      const due = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.wall += due.at - this.mono;
      this.mono = due.at;
      due.fn();
      await this.flush();
    }
    this.wall += target - this.mono;
    this.mono = target;
    await this.flush();
  }

  /** A system suspend: the wall clock jumps, timers do not notice. */
  suspend(ms: number): void {
    this.wall += ms;
  }
}
