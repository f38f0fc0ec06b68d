import { CredproxyError } from '../errors.js';
import type { Logger } from '../log.js';
import { systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from './clock.js';
import { renewalFireAt } from './renewal-time.js';

/** What a renewal attempt found; anything thrown counts as a failure (backoff). */
export type RenewalOutcome =
  /** A refreshed token (or one someone else already renewed): re-arm for it. */
  | { kind: 'renewed'; expiry: number; obtainedAt: number; notBefore?: number }
  /** Inside the refresh cooldown: try again at `until` (ms), not counted as a failure. */
  | { kind: 'deferred'; until: number }
  /** Nothing left to renew (removed, no refresh token, revoked, provider gone). */
  | { kind: 'stop' };

export type RenewFn = (provider: string, bucket: string, expectedExpiry: number) => Promise<RenewalOutcome>;

export interface RenewalSchedulerOptions {
  renew: RenewFn;
  clock?: Clock;
  timers?: Timers;
  /** [0, 1); picks the jitter. */
  random?: () => number;
  logger?: Logger;
  /** First retry delay after a failed renewal (SPEC: 30 s), doubling per failure. */
  backoffInitialMs?: number;
  /** Ceiling of the retry delay (SPEC: 30 min). */
  backoffMaxMs?: number;
  /** Give up after this many failures in a row (SPEC: 10). */
  maxFailures?: number;
  /**
   * Longest a timer sleeps before re-checking the wall clock. Timers run on
   * a monotonic clock that stops during system suspend; waking regularly is
   * what lets a renewal due "during" a suspend happen right after resume.
   */
  maxSleepMs?: number;
}

export interface ArmOptions {
  /** When the token was obtained (ms); default: now, i.e. first seen. */
  obtainedAt?: number;
  /** Never fire before this time (ms): the end of the refresh cooldown. */
  notBefore?: number;
}

interface Entry {
  provider: string;
  bucket: string;
  expiry: number;
  obtainedAt: number;
  fireAt: number;
  timer: TimerHandle | undefined;
  failures: number;
  running: boolean;
  /** Bumped whenever the entry is re-armed for another token, so stale outcomes are ignored. */
  generation: number;
}

/**
 * SPEC §5 renewal timers: one per provider:bucket, firing at
 * expiry - lead - jitter (never inside the refresh cooldown), re-armed after
 * each renewal, retried with exponential backoff on failure, and dropped
 * after too many failures in a row. Arming is idempotent for the same token.
 * Timers never keep the process alive.
 */
export class RenewalScheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly renew: RenewFn;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly logger: Logger | undefined;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxFailures: number;
  private readonly maxSleepMs: number;
  private closed = false;

  constructor(options: RenewalSchedulerOptions) {
    this.renew = options.renew;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.random = options.random ?? Math.random;
    this.logger = options.logger;
    this.backoffInitialMs = options.backoffInitialMs ?? 30_000;
    this.backoffMaxMs = options.backoffMaxMs ?? 30 * 60_000;
    this.maxFailures = options.maxFailures ?? 10;
    this.maxSleepMs = options.maxSleepMs ?? 60_000;
  }

  private static key(provider: string, bucket: string): string {
    return `${provider}:${bucket}`;
  }

  /**
   * Arm (or keep) the timer for this token. Calling again for the same
   * expiry changes nothing except pushing the fire time past `notBefore`.
   */
  arm(provider: string, bucket: string, token: { expiry: number }, options: ArmOptions = {}): void {
    if (this.closed || !Number.isFinite(token.expiry)) return;
    const key = RenewalScheduler.key(provider, bucket);
    const existing = this.entries.get(key);
    if (existing && existing.expiry === token.expiry) {
      if (options.notBefore !== undefined && options.notBefore > existing.fireAt && !existing.running) {
        existing.fireAt = options.notBefore;
        this.schedule(existing);
      }
      return;
    }
    const now = this.clock.now();
    const entry: Entry = existing ?? { provider, bucket, expiry: 0, obtainedAt: 0, fireAt: 0, timer: undefined, failures: 0, running: false, generation: 0 };
    entry.generation++;
    entry.expiry = token.expiry;
    entry.obtainedAt = options.obtainedAt ?? now;
    entry.failures = 0;
    entry.fireAt = Math.max(renewalFireAt(entry.expiry, entry.obtainedAt, this.random()), options.notBefore ?? -Infinity);
    this.entries.set(key, entry);
    this.logger?.debug({ provider, bucket, fireAt: new Date(entry.fireAt).toISOString() }, 'renewal timer armed');
    if (!entry.running) this.schedule(entry);
  }

  cancel(provider: string, bucket: string): void {
    const key = RenewalScheduler.key(provider, bucket);
    const entry = this.entries.get(key);
    if (!entry) return;
    if (entry.timer !== undefined) this.timers.clearTimeout(entry.timer);
    entry.timer = undefined;
    entry.generation++;
    this.entries.delete(key);
  }

  isArmed(provider: string, bucket: string): boolean {
    return this.entries.has(RenewalScheduler.key(provider, bucket));
  }

  /** When the timer for this credential is due (ms), if one is armed. */
  nextFireAt(provider: string, bucket: string): number | undefined {
    return this.entries.get(RenewalScheduler.key(provider, bucket))?.fireAt;
  }

  /** Consecutive failed renewals for this credential (0 when unknown). */
  failureCount(provider: string, bucket: string): number {
    return this.entries.get(RenewalScheduler.key(provider, bucket))?.failures ?? 0;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Stop every timer; later arm() calls are ignored. */
  close(): void {
    this.closed = true;
    for (const entry of this.entries.values()) {
      if (entry.timer !== undefined) this.timers.clearTimeout(entry.timer);
      entry.timer = undefined;
      entry.generation++;
    }
    this.entries.clear();
  }

  private schedule(entry: Entry): void {
    if (entry.timer !== undefined) this.timers.clearTimeout(entry.timer);
    const delay = Math.min(Math.max(0, entry.fireAt - this.clock.now()), this.maxSleepMs);
    entry.timer = this.timers.setTimeout(() => this.wake(entry), delay, { keepAlive: false });
  }

  private wake(entry: Entry): void {
    entry.timer = undefined;
    if (this.closed || this.entries.get(RenewalScheduler.key(entry.provider, entry.bucket)) !== entry) return;
    // Re-check the wall clock: not due yet means an intermediate wake-up.
    if (this.clock.now() < entry.fireAt) {
      this.schedule(entry);
      return;
    }
    void this.fire(entry);
  }

  private async fire(entry: Entry): Promise<void> {
    const generation = entry.generation;
    entry.running = true;
    let outcome: RenewalOutcome | undefined;
    let failed = false;
    try {
      outcome = await this.renew(entry.provider, entry.bucket, entry.expiry);
    } catch (err) {
      failed = true;
      // Only CredproxyError texts are built from known-safe fields; anything else is not echoed.
      const reason = err instanceof CredproxyError ? err.message : 'unexpected error';
      this.logger?.warn({ provider: entry.provider, bucket: entry.bucket, failures: entry.failures + 1, reason }, 'scheduled renewal failed');
    } finally {
      entry.running = false;
    }
    const current = this.entries.get(RenewalScheduler.key(entry.provider, entry.bucket)) === entry;
    if (this.closed || !current) return;
    if (entry.generation !== generation) {
      // Re-armed for another token while this attempt ran: that arming stands.
      this.schedule(entry);
      return;
    }
    const now = this.clock.now();
    if (failed) {
      entry.failures++;
      if (entry.failures >= this.maxFailures) {
        this.logger?.warn({ provider: entry.provider, bucket: entry.bucket, failures: entry.failures }, 'giving up scheduled renewal');
        this.cancel(entry.provider, entry.bucket);
        return;
      }
      const delay = Math.min(this.backoffInitialMs * 2 ** (entry.failures - 1), this.backoffMaxMs);
      entry.fireAt = now + delay;
      this.schedule(entry);
      return;
    }
    switch (outcome!.kind) {
      case 'stop':
        this.cancel(entry.provider, entry.bucket);
        return;
      case 'deferred':
        entry.fireAt = Math.max(outcome!.until, now);
        this.schedule(entry);
        return;
      case 'renewed': {
        const o = outcome!;
        entry.failures = 0;
        entry.generation++;
        entry.expiry = o.expiry;
        entry.obtainedAt = o.obtainedAt;
        entry.fireAt = Math.max(renewalFireAt(o.expiry, o.obtainedAt, this.random()), o.notBefore ?? -Infinity);
        this.schedule(entry);
        return;
      }
    }
  }
}
