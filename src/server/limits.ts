import { CredproxyError } from '../errors.js';

/**
 * SPEC §5 per-connection limits. The benchmark raises `requestsPerWindow`
 * through ProxyServerOptions.limits; nothing else should.
 */
export interface LimitOptions {
  /** Accepted requests allowed in any rolling window (default 60). */
  requestsPerWindow: number;
  /** Window length in ms (default 1000). */
  windowMs: number;
  /** Requests in flight per connection, `cancel` exempt (default 16). */
  maxInFlight: number;
}

export const DEFAULT_LIMITS: LimitOptions = { requestsPerWindow: 60, windowMs: 1000, maxInFlight: 16 };

export function resolveLimits(overrides: Partial<LimitOptions> = {}): LimitOptions {
  const limits = { ...DEFAULT_LIMITS, ...overrides };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value < 1) throw new CredproxyError('USAGE', `limit ${name} must be a positive integer`);
  }
  return limits;
}

export type Admission = { ok: true } | { ok: false; retryAfter: number };

/**
 * Rolling-window rate limit plus an in-flight cap for one connection. Only
 * admitted requests are recorded: a refused request neither counts towards
 * the window nor takes an in-flight slot.
 */
export class ConnectionLimiter {
  /**
   * Admission times inside the window, oldest first, from index `head` on.
   * Grows with the requests actually made, not with the limit: a limit
   * raised for a benchmark must not cost memory per idle connection.
   */
  private times: number[] = [];
  private head = 0;
  private inFlightCount = 0;

  constructor(
    private readonly limits: LimitOptions,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get inFlight(): number {
    return this.inFlightCount;
  }

  /** `takesSlot`: false for requests that never stay in flight (cancel, rejected envelopes). */
  admit(takesSlot: boolean): Admission {
    const a = this.check(takesSlot);
    if (a.ok) this.take(takesSlot);
    return a;
  }

  /** Admit through this limiter and a shared one (the peer's): both or neither record the request. */
  admitWith(shared: ConnectionLimiter | null, takesSlot: boolean): Admission {
    const own = this.check(takesSlot);
    if (!own.ok) return own;
    const other = shared?.check(takesSlot) ?? own;
    if (!other.ok) return other;
    this.take(takesSlot);
    shared?.take(takesSlot);
    return own;
  }

  private take(takesSlot: boolean): void {
    this.times.push(this.now());
    if (takesSlot) this.inFlightCount++;
  }

  /** Would a request be admitted now? Records nothing. */
  check(takesSlot: boolean): Admission {
    const now = this.now();
    const windowStart = now - this.limits.windowMs;
    const times = this.times;
    while (this.head < times.length && times[this.head]! <= windowStart) this.head++;
    if (this.head > 64 && this.head * 2 > times.length) {
      this.times = times.slice(this.head);
      this.head = 0;
    }
    if (takesSlot && this.inFlightCount >= this.limits.maxInFlight) return { ok: false, retryAfter: 1 };
    if (this.times.length - this.head >= this.limits.requestsPerWindow) {
      const freeAt = this.times[this.head]! + this.limits.windowMs;
      return { ok: false, retryAfter: Math.max(1, Math.ceil((freeAt - now) / 1000)) };
    }
    return { ok: true };
  }

  /** The work of a request admitted with takesSlot has ended. */
  release(): void {
    if (this.inFlightCount > 0) this.inFlightCount--;
  }
}
